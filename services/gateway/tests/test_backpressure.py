"""Backpressure measures what is not handled yet: per group lag + pending, plus due items of
the delay store; never acknowledged entries or what waits for a later time.

Each test runs a gateway on a Redis of its own: they make a registry stream's consumers
fall behind, or leave its delay store due without a promoter, which no other test may see.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio
from prometheus_client import REGISTRY

from riverbed import keys
from riverbed.consumer import Message, StreamConsumer, Subscription
from riverbed.delay import DelayStore
from riverbed.errors import RetryLater
from riverbed.service import Service
from riverbed.settings import RedisSettings
from riverbed.testing import RedisServer, fast_settings, wait_for
from riverbed_gateway.bootstrap import create_service
from riverbed_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

STREAM = "email.requested"
HOUR_MS = 3_600_000


def email(to: str = "ada@example.com", **extra: Any) -> dict[str, Any]:
    return {
        "type": "email.requested.v1",
        "data": {"to": to, "subject": "Hi", "text": "Hello"},
        **extra,
    }


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


Gateway = tuple[Service, httpx.AsyncClient, redis.asyncio.Redis]


@pytest.fixture
async def start_private_gateway(own_redis: RedisServer) -> AsyncIterator[Any]:
    """Start a gateway (settings overridable) on a Redis of its own, with a client of it."""
    started: list[tuple[Service, httpx.AsyncClient, redis.asyncio.Redis]] = []

    async def factory(**overrides: Any) -> Gateway:
        service = create_service(
            GatewaySettings(local_api_key="test-key", **overrides),
            redis_settings=RedisSettings(url=own_redis.url),
        )
        await service.start()
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.app),
            base_url="http://g",
            headers={"Authorization": "Bearer test-key"},
        )
        client = redis.asyncio.Redis.from_url(own_redis.url)
        started.append((service, http, client))
        return service, http, client

    yield factory
    for service, http, client in started:
        await http.aclose()
        await client.aclose()
        await service.stop()


async def sample(service: Service) -> None:
    await service.container.backpressure.sample_now(STREAM)


async def test_acknowledged_entries_and_what_waits_for_later_do_not_count(
    start_private_gateway: Any,
) -> None:
    service, http, client = await start_private_gateway(max_unhandled_events=1_000)
    for batch in range(4):  # 2,000 entries, 2x the ceiling
        events = [email(f"{batch}-{i}@example.com") for i in range(500)]
        assert (await http.post("/v1/events:batch", json={"events": events})).status_code == 202
    assert (await http.post("/v1/events", json=email("retry@example.com"))).status_code == 202
    next_week = await http.post("/v1/events", json=email(delay=7 * 24 * 3600))
    assert next_week.json()["entry_id"] is None

    handled = 0

    async def handler(message: Message[Any]) -> None:
        nonlocal handled
        if message.payload.to == "retry@example.com":
            raise RetryLater("the relay said: in an hour", delay_ms=HOUR_MS)
        handled += 1

    consumer = StreamConsumer(
        client,
        Subscription(stream=STREAM, group="mailer", handler=handler),
        settings=fast_settings(),
        consumer_name="c1",
        service="test",
    )
    consumer.start()
    store = DelayStore(client, STREAM)
    try:

        async def all_handled_one_parked() -> bool:
            groups = await client.xinfo_groups(keys.stream_key(STREAM))
            waiting, due, _ = await store.waiting()
            return (
                handled == 2_000
                and groups[0]["lag"] == 0
                and groups[0]["pending"] == 0
                and (waiting, due) == (2, 0)  # the parked retry and the event for next week
            )

        await wait_for(all_handled_one_parked, what="2,000 acknowledged and the retry parked")
    finally:
        consumer.stop()
        await consumer.join()

    assert await client.xlen(keys.stream_key(STREAM)) >= 2_001, "nothing trimmed yet"
    await sample(service)
    assert gauge("riverbed_gateway_backpressure_unhandled_events", stream=STREAM) == 0
    response = await http.post("/v1/events", json=email())
    assert response.status_code == 202, response.text


async def test_a_group_behind_past_the_ceiling_is_refused_with_503_and_retry_after(
    start_private_gateway: Any,
) -> None:
    service, http, client = await start_private_gateway(max_unhandled_events=5)
    key = keys.stream_key(STREAM)
    assert (await http.post("/v1/events", json=email())).status_code == 202
    await client.xgroup_create(key, "mailer", id="0")
    await client.xgroup_create(key, "audit", id="$")  # caught up: the other one counts
    events = {"events": [email(f"{i}@example.com") for i in range(5)]}
    assert (await http.post("/v1/events:batch", json=events)).status_code == 202
    # 'mailer' takes 3 of its 6 and acknowledges none: 3 undelivered + 3 pending
    await client.xreadgroup("mailer", "c1", {key: ">"}, count=3)
    await sample(service)

    refused = await http.post("/v1/events", json=email())
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert refused.headers["content-type"] == "application/problem+json"
    detail = refused.json()["detail"]
    assert "6 events not handled yet" in detail
    assert "group 'mailer' has 6 undelivered or pending" in detail
    assert "ceiling 5" in detail
    metrics = (await http.get("/metrics")).text
    assert 'riverbed_gateway_backpressure_ceiling{kind="unhandled_events"} 5.0' in metrics
    assert f'riverbed_gateway_backpressure_active{{stream="{STREAM}"}} 1.0' in metrics
    assert f'riverbed_gateway_backpressure_unhandled_events{{stream="{STREAM}"}} 6.0' in metrics

    # it catches up: everything read and acknowledged, and the stream accepts again
    entries = await client.xreadgroup("mailer", "c1", {key: ">"})
    pending = await client.xpending_range(key, "mailer", "-", "+", 100)
    assert len(entries[0][1]) == 3
    assert len(pending) == 6
    await client.xack(key, "mailer", *(p["message_id"] for p in pending))
    await sample(service)
    assert (await http.post("/v1/events", json=email())).status_code == 202


async def test_due_items_not_promoted_yet_count(start_private_gateway: Any) -> None:
    service, http, _ = await start_private_gateway(max_unhandled_events=5)
    due = datetime.now(UTC) + timedelta(milliseconds=500)
    later = {"events": [email(f"{i}@example.com", deliver_at=due.isoformat()) for i in range(6)]}
    assert (await http.post("/v1/events:batch", json=later)).status_code == 202
    await sample(service)
    assert (await http.post("/v1/events", json=email())).status_code == 202, "not due yet"

    await wait_for(lambda: time.time() > due.timestamp(), timeout=10, what="the kept events' time")
    await sample(service)  # nobody consumes the stream: nothing promotes them
    refused = await http.post("/v1/events", json=email())
    assert refused.status_code == 503
    detail = refused.json()["detail"]
    assert "6 due in the delay store" in detail
    assert "ceiling 5" in detail


def test_the_ceiling_keeps_its_old_variable_as_an_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_MAX_GROUP_LAG", "1234")
    assert GatewaySettings().max_unhandled_events == 1234
    monkeypatch.setenv("GATEWAY_MAX_UNHANDLED_EVENTS", "4321")
    assert GatewaySettings().max_unhandled_events == 4321
