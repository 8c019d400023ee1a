"""``/metrics`` is served without a key: no label value is an identifier a caller could use.

A real delivery flow (endpoints registered, an event fanned out and delivered, one endpoint
answering 410 and disabled) runs, then the whole exposition is read with Prometheus' own
parser: no label value holds an endpoint, delivery, event or task id, or an endpoint's URL,
and every ``riverbed_webhooks_*`` label takes its values from a fixed set. The delivery log
and the log lines keep what happened per endpoint.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio
from prometheus_client.parser import text_string_to_metric_families

from riverbed.publisher import Publisher
from riverbed.testing import make_event, wait_for

pytestmark = pytest.mark.integration

#: every label of this service's own metrics, and the values it may take
FIXED_LABELS: dict[str, set[str]] = {
    "status_class": {
        "1xx", "3xx", "4xx", "5xx", "timeout", "connection", "blocked", "invalid_url", "other",
    },
    "reason": {"gone", "failing", "manual", "rate_limit", "concurrency", "deleted", "disabled"},
    "by": {"fanout", "replay"},
    "le": set(),  # histogram buckets: numbers
}  # fmt: skip


def label_values(exposition: str) -> list[tuple[str, str, str]]:
    """(sample, label, value) of every labelled sample."""
    return [
        (sample.name, label, value)
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        for label, value in sample.labels.items()
    ]


async def test_no_label_value_identifies_an_endpoint_delivery_or_event(
    start_service: Any, receiver: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service()
    endpoints = []
    for path, answer in (("/ok", 200), ("/gone", 410)):
        url = receiver.script(path, answer)
        created = await running.client.post("/v1/endpoints", json={"url": url})
        assert created.status_code == 201, created.text
        receiver.trust(path, created.json()["secret"])
        endpoints.append(created.json())
    event = make_event(1)
    await Publisher(redis_client).publish(event, stream=running.source_stream)

    async def concluded() -> bool:
        found = await running.client.get(f"/v1/events/{event.id}/deliveries")
        return sorted(d["status"] for d in found.json()["data"]) == ["dropped", "succeeded"]

    await wait_for(concluded, what="one delivery succeeded, the other dropped by the 410")
    deliveries = (await running.client.get(f"/v1/events/{event.id}/deliveries")).json()["data"]
    identifiers = {event.id}
    identifiers |= {e["id"] for e in endpoints} | {e["url"] for e in endpoints}
    identifiers |= {d["delivery_id"] for d in deliveries} | {d["task_id"] for d in deliveries}

    exposition = (await running.client.get("/metrics")).text
    assert "riverbed_webhooks_attempt_seconds_count" in exposition  # the flow was measured
    leaks = [
        (sample, label, value)
        for sample, label, value in label_values(exposition)
        if any(identifier in value for identifier in identifiers)
    ]
    assert not leaks, f"identifiers in metric labels: {leaks}"
    for sample, label, value in label_values(exposition):
        if not sample.startswith("riverbed_webhooks_"):
            continue
        assert label in FIXED_LABELS, f"{sample} has a label outside the fixed sets: {label}"
        if label == "le":
            float(value)  # a bucket bound, e.g. "0.5" or "+Inf"
        else:
            assert value in FIXED_LABELS[label], (sample, label, value)
