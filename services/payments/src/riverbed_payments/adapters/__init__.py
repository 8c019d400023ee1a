"""SQL storage (ledger, outbox, reconciliation reports), migrations (the relay: riverbed.outbox)."""
