"""The gateway's own metrics (the runtime's publish metrics count published events)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "riverbed_gateway_requests_total", "HTTP requests by route and status", ["route", "status"]
)
REQUEST_SECONDS = Histogram(
    "riverbed_gateway_request_seconds",
    "HTTP request latency by route",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
REJECTED = Counter("riverbed_gateway_rejected_total", "Refused requests by reason", ["reason"])
ACCEPTED_EVENTS = Counter(
    "riverbed_gateway_accepted_events_total", "Events accepted, by type", ["type"]
)
BACKPRESSURE_CEILING = Gauge(
    "riverbed_gateway_backpressure_ceiling",
    "Events not handled yet past which a stream refuses new events (503)",
    ["kind"],
)
BACKPRESSURE_UNHANDLED = Gauge(
    "riverbed_gateway_backpressure_unhandled_events",
    "Events a target stream has not handled yet, as last sampled: the most-behind group's "
    "lag + pending, plus due items of its delay store not promoted yet",
    ["stream"],
)
BACKPRESSURE_ACTIVE = Gauge(
    "riverbed_gateway_backpressure_active",
    "1 while a target stream is past a ceiling and refusing events",
    ["stream"],
)
INBOUND = Counter(
    "riverbed_gateway_inbound_total",
    "Payment provider webhook deliveries by provider and outcome "
    "(accepted, duplicate, ignored, error, or the reason it was refused)",
    ["provider", "outcome"],
)


#: (metric, label values) -> its child: labels() validates and locks on every call, about
#: 1.5 µs; a request needs three. Bounded by routes x statuses and event types
_CHILDREN: dict[tuple[Any, ...], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, looked up once."""
    key = (metric, *values)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*values)
    return found
