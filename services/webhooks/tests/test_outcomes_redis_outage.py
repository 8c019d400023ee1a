"""Redis goes away between recording outcomes and publishing them: none is lost, none doubled.

The service runs on a private ``redis-server`` that keeps its data across a stop (AOF,
fsync on every write). Every delivery is in flight at the receiver when Redis stops; the
receiver then answers 200 to each, so each success is recorded while Redis is down, and
an endpoint is disabled through the API meanwhile. Once Redis is back, every succeeded
delivery must have exactly one ``webhook.delivery.succeeded.v1`` on its stream (counted
by distinct event id: the outbox relay may append a batch twice, under the same ids) and
the disabling exactly one ``webhook.endpoint.disabled.v1``.

Nothing waits a fixed time: every wait is for a condition.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio

from riverbed import keys
from riverbed.publisher import Publisher
from riverbed.settings import RedisSettings
from riverbed.testing import NO_REDIS_HELP, RedisServer, make_event, wait_for
from riverbed_contracts import CloudEvent, event_from_entry

from .conftest import settings_for, start

pytestmark = [pytest.mark.integration, pytest.mark.fault]

#: deliveries in flight when Redis stops (the reported case: 20 payments)
IN_FLIGHT = 20


@pytest.fixture
def durable_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """A private redis-server whose data survives a stop and a start (AOF, fsync always)."""
    monkeypatch.delenv("REDIS_CLUSTER", raising=False)  # a single node, also in a cluster run
    if shutil.which("redis-server") is None:
        pytest.skip("needs the redis-server binary to stop and start Redis: " + NO_REDIS_HELP)
    directory = Path(tempfile.mkdtemp(prefix="rb-redis-"))
    server = RedisServer(directory, extra_config={"appendonly": "yes", "appendfsync": "always"})
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def client_of(durable_redis: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(durable_redis.url)
    try:
        yield client
    finally:
        await client.aclose()


async def on_stream(client: redis.asyncio.Redis, stream: str) -> list[CloudEvent]:
    return [event_from_entry(f) for _, f in await client.xrange(keys.stream_key(stream))]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
async def test_outcomes_recorded_while_redis_is_down_are_each_published_once(
    durable_redis: RedisServer,
    client_of: redis.asyncio.Redis,
    receiver: Any,
    database: Any,
    unique: str,
) -> None:
    settings = settings_for(
        unique,
        database,
        request_timeout_s=60.0,  # the answers wait for Redis to stop: never a timeout here
        outbox_poll_interval_s=0.05,
        outbox_max_backoff_s=0.2,
    )
    running = await start(settings, RedisSettings(url=durable_redis.url))
    api = running.client
    try:
        held = await _endpoint(api, receiver, "/held", "slow", max_concurrency=IN_FLIGHT)
        spare = await _endpoint(api, receiver, "/spare", 200, event_types=["email.*"])
        events = [make_event(n) for n in range(IN_FLIGHT)]
        await Publisher(client_of).publish_many(events, stream=settings.source_streams[0])
        await wait_for(lambda: len(receiver.to("/held")) == IN_FLIGHT,
                       what="every delivery in flight at the receiver")  # fmt: skip

        await asyncio.to_thread(durable_redis.stop)  # Redis goes away...
        receiver.released.set()  # ...and only then does every answer (200) come back

        async def recorded() -> bool:
            return len(await _succeeded(api, held)) == IN_FLIGHT

        await wait_for(recorded, timeout=60, what="every success recorded, Redis down")
        disabled = await api.post(f"/v1/endpoints/{spare}/disable")  # Redis still down

        await asyncio.to_thread(durable_redis.start)  # the same data comes back
        await client_of.connection_pool.disconnect()  # this test's own pooled sockets are dead
        tasks = settings.stream("webhook.delivery.requested")

        async def settled() -> bool:
            pending = await client_of.xpending(keys.stream_key(tasks), "webhooks")
            waiting = await client_of.zcard(keys.delay_key(tasks))
            return bool(pending["pending"] == 0 and waiting == 0)

        await wait_for(settled, timeout=60, what="every task acknowledged, none parked")
        # a later delivery: once its outcome is on the stream, everything recorded before it
        # has been relayed too (the relay appends in commit order)
        sentinel = make_event(IN_FLIGHT)
        await Publisher(client_of).publish(sentinel, stream=settings.source_streams[0])
        outcomes = settings.stream("webhook.delivery.succeeded")

        async def sentinel_reported() -> bool:
            reported = await on_stream(client_of, outcomes)
            return any(e.data["event_id"] == sentinel.id for e in reported)

        await wait_for(sentinel_reported, timeout=60, what="the later delivery's outcome")

        succeeded = await _succeeded(api, held)
        assert len(succeeded) == IN_FLIGHT + 1
        reported = await on_stream(client_of, outcomes)
        ids_by_delivery: dict[str, set[str]] = defaultdict(set)
        for event in reported:
            ids_by_delivery[event.data["delivery_id"]].add(event.id)
        assert {d: len(ids) for d, ids in ids_by_delivery.items()} == dict.fromkeys(succeeded, 1), (
            "every succeeded delivery reported, under one event id"
        )

        assert disabled.status_code == 200, disabled.text
        reports = await on_stream(client_of, settings.stream("webhook.endpoint.disabled"))
        assert {(e.id, e.data["endpoint_id"], e.data["reason"]) for e in reports} == {
            (reports[0].id, spare, "manual")
        }, "the disabling reported once"
    finally:
        await api.aclose()
        await running.service.stop()


async def _endpoint(api: httpx.AsyncClient, receiver: Any, path: str, answer: Any,
                    **fields: Any) -> str:  # fmt: skip
    created = await api.post("/v1/endpoints", json={"url": receiver.script(path, answer), **fields})
    assert created.status_code == 201, created.text
    receiver.trust(path, created.json()["secret"])
    endpoint_id: str = created.json()["id"]
    return endpoint_id


async def _succeeded(api: httpx.AsyncClient, endpoint_id: str) -> set[str]:
    """Delivery ids the log has as succeeded (read from the database: works without Redis)."""
    answer = await api.get(f"/v1/endpoints/{endpoint_id}/deliveries",
                           params={"status": "succeeded", "limit": 500})  # fmt: skip
    assert answer.status_code == 200, answer.text
    return {d["delivery_id"] for d in answer.json()["data"]}
