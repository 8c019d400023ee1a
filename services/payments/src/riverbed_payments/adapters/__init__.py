"""SQL storage (ledger, outbox, reconciliation reports), migrations, the outbox relay."""
