"""Prometheus metrics of the webhooks service, defined once.

Label values are bounded: status classes and reasons are fixed sets, and the
per-endpoint latency histogram labels at most ``WEBHOOKS_METRICS_ENDPOINT_LABELS``
distinct endpoints per process (the first ones seen); the rest share ``other``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ATTEMPTS = Counter("riverbed_webhooks_attempts_total", "Delivery attempts made (requests tried)")
SUCCEEDED = Counter("riverbed_webhooks_succeeded_total", "Delivery attempts answered with 2xx")
# status_class: 1xx 3xx 4xx 5xx other timeout connection blocked invalid_url
FAILED = Counter(
    "riverbed_webhooks_failed_total", "Delivery attempts that failed", ["status_class"]
)
ATTEMPT_SECONDS = Histogram(
    "riverbed_webhooks_attempt_seconds",
    "Duration of one delivery attempt, per endpoint (bounded: see module doc)",
    ["endpoint"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
EXHAUSTED = Counter(
    "riverbed_webhooks_exhausted_total", "Deliveries whose every scheduled attempt failed"
)
# reason: gone failing manual
ENDPOINTS_DISABLED = Counter(
    "riverbed_webhooks_endpoints_disabled_total", "Endpoints disabled, by reason", ["reason"]
)
DISABLED_ENDPOINTS = Gauge(
    "riverbed_webhooks_disabled_endpoints", "Endpoints disabled now (sampled from the database)"
)
# reason: rate_limit concurrency
DEFERRED = Counter(
    "riverbed_webhooks_deferred_total",
    "Delivery tasks put back without an attempt, by reason",
    ["reason"],
)
TASKS_CREATED = Counter(
    "riverbed_webhooks_tasks_created_total", "Delivery tasks created by fan-out or replay", ["by"]
)
DROPPED = Counter(
    "riverbed_webhooks_dropped_total",
    "Delivery tasks not attempted: endpoint deleted or disabled",
    ["reason"],
)

OTHER = "other"


class EndpointLabels:
    """The ``endpoint`` label value of an endpoint id: itself for the first ``limit`` ids seen."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._known: set[str] = set()

    def __call__(self, endpoint_id: str) -> str:
        if endpoint_id in self._known:
            return endpoint_id
        if len(self._known) < self.limit:
            self._known.add(endpoint_id)
            return endpoint_id
        return OTHER


LOG_PRUNED = Counter(
    "riverbed_webhooks_log_pruned_total",
    "Finished deliveries deleted from the delivery log (with their attempts) for their age",
)
