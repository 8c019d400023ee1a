"""Prometheus metrics of the payments service, defined once.

Label values are bounded: ``type`` is a ledger transaction kind or a registered event
type, ``currency`` an ISO 4217 code the ledger accepted, ``class`` a reconciliation
class, ``outcome`` and ``reason`` fixed sets.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDED = Counter(
    "riverbed_payments_recorded_total",
    "Ledger transactions recorded, by kind (payment, refund, dispute, …) and currency",
    ["type", "currency"],
)
LEDGER_WRITE_SECONDS = Histogram(
    "riverbed_payments_ledger_write_seconds",
    "Time of one ledger unit of work (claim, postings, outbox rows, commit)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
# outcome: recorded already_processed already_recorded failure_recorded ignored
HANDLED = Counter(
    "riverbed_payments_events_total", "Payment events handled, by outcome", ["outcome"]
)
# reason: invalid_amount (refused), out_of_order (put back: one per try while an event
# waits for its payment), out_of_order_expired (refused: it waited past the bound)
REJECTED = Counter(
    "riverbed_payments_rejected_total", "Payment events refused or put back", ["reason"]
)
OUTBOX_BACKLOG = Gauge("riverbed_payments_outbox_backlog", "Outbox events not yet published")
OUTBOX_OLDEST_AGE = Gauge(
    "riverbed_payments_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox event (0 when none)",
)
OUTBOX_PUBLISHED = Counter(
    "riverbed_payments_outbox_published_total", "Outbox events relayed to streams", ["type"]
)
OUTBOX_RELAY_ERRORS = Counter(
    "riverbed_payments_outbox_relay_errors_total", "Relay passes that failed (and were retried)"
)
RECONCILIATION_LINES = Counter(
    "riverbed_payments_reconciliation_lines_total",
    "Reconciliation lines classified, by class",
    ["class"],
)
RECONCILIATIONS = Counter(
    "riverbed_payments_reconciliations_total",
    "Reconciliation reports finished, by status (balanced, discrepancies, failed)",
    ["status"],
)
