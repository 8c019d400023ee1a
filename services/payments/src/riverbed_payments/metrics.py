"""Prometheus metrics of the payments service, defined once.

Label values are bounded: ``type`` is a ledger transaction kind or a registered event
type, ``currency`` an ISO 4217 code the ledger accepted, ``class`` a reconciliation
class, ``outcome`` and ``reason`` fixed sets. The outbox's metrics are the runtime's
(``riverbed_outbox_*{service="payments"}``), also shown under their former names.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from riverbed import outbox

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


class _OutboxUnderOldNames(Collector):
    """The runtime outbox relay's series for this service (``riverbed_outbox_*{service=
    "payments"}``) also under the names payments exposed before the relay was shared
    (``riverbed_payments_outbox_*``), which dashboards and alert rules still read.

    A view at scrape time, not a second count: both names always show the same values.
    """

    NAMES: Final = {
        "riverbed_outbox_backlog": "riverbed_payments_outbox_backlog",
        "riverbed_outbox_oldest_age_seconds": "riverbed_payments_outbox_oldest_age_seconds",
        "riverbed_outbox_published": "riverbed_payments_outbox_published",
        "riverbed_outbox_relay_errors": "riverbed_payments_outbox_relay_errors",
    }

    def __init__(self, service: str) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        for runtime_metric in (
            outbox.BACKLOG,
            outbox.OLDEST_AGE,
            outbox.PUBLISHED,
            outbox.RELAY_ERRORS,
        ):
            for family in runtime_metric.collect():
                renamed = Metric(self.NAMES[family.name], family.documentation, family.type)
                for sample in family.samples:
                    labels = dict(sample.labels)
                    if labels.pop("service", None) != self.service:
                        continue
                    suffix = sample.name[len(family.name) :]
                    if suffix == "_created":
                        continue  # the old counters were read without it
                    renamed.add_sample(renamed.name + suffix, labels, sample.value)
                yield renamed


REGISTRY.register(_OutboxUnderOldNames("payments"))
