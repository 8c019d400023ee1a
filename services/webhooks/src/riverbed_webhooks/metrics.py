"""Prometheus metrics of the webhooks service, defined once.

Label values are fixed sets (status classes, reasons, how a task was made) and never an
identifier: ``/metrics`` is served without a key, and an endpoint, delivery or event id
seen there is one a caller could use against the API or the subscriber. What happened to
one endpoint is in the delivery log (the authenticated API: every attempt with its status
and duration) and in the service's log lines (``endpoint_id``, ``duration_ms``).
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
    "Duration of one delivery attempt, s (per endpoint: the delivery log's duration_ms)",
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

LOG_PRUNED = Counter(
    "riverbed_webhooks_log_pruned_total",
    "Finished deliveries deleted from the delivery log (with their attempts) for their age",
)
