"""The outbox relay: at least once, the same event ids every time, surviving failures."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from riverbed import keys
from riverbed.publisher import Publisher
from riverbed.testing import wait_for
from riverbed_contracts import event_from_entry
from riverbed_contracts.registry import validate_data
from riverbed_payments import metrics
from riverbed_payments.adapters.outbox import OutboxRelay
from riverbed_payments.adapters.sql import SqlLedger
from riverbed_payments.adapters.tables import outbox
from riverbed_payments.service_layer.recording import Recorder
from riverbed_payments.testing import T0, succeeded

pytestmark = pytest.mark.integration


class CrashAfterAppend(OutboxRelay):
    """A relay whose process 'dies' after appending to Redis, before its commit."""

    crashes = 1

    async def _mark_published(self, conn: AsyncConnection, ids: list[int]) -> None:
        if self.crashes:
            self.crashes -= 1
            raise ConnectionError("killed between the append and the commit")
        await super()._mark_published(conn, ids)


async def _record(engine: AsyncEngine, stream: str, *events: Any) -> None:
    recorder = Recorder(SqlLedger(engine), group="payments", stream_for=lambda _: stream,
                        clock=lambda: T0)  # fmt: skip
    for event in events:
        await recorder.record(event, validate_data(event), stream="in")


async def test_a_crash_between_append_and_commit_republishes_with_the_same_ids(
    engine: AsyncEngine, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"payment.recorded.t{unique}"
    await _record(engine, stream, succeeded("pi_1"), succeeded("pi_2"))
    relay = CrashAfterAppend(engine, lambda: Publisher(redis_client), clock=lambda: T0)
    with pytest.raises(ConnectionError):
        await relay.relay_once()
    assert await relay.sample() == (2, pytest.approx(0.0)), "still unpublished: rolled back"
    assert await relay.relay_once() == 2
    assert await relay.relay_once() == 0
    entries = await redis_client.xrange(keys.stream_key(stream))
    ids = [event_from_entry(fields).id for _, fields in entries]
    assert (len(ids), len(set(ids))) == (4, 2), "each event twice, under one id"
    assert ids[:2] == ids[2:], "in commit order both times"
    assert await relay.sample() == (0, 0.0)


class Unreachable(Publisher):
    """A publisher whose Redis does not answer (until ``up`` is set)."""

    up = False
    failures = 0

    async def publish_many(self, events: Any, **options: Any) -> list[str]:
        if not self.up:
            self.failures += 1
            raise ConnectionRefusedError("Redis is down")
        return await super().publish_many(events, **options)


async def test_the_relay_loop_survives_an_unreachable_redis_and_catches_up(
    engine: AsyncEngine, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"payment.recorded.t{unique}"
    await _record(engine, stream, succeeded("pi_1"))
    publisher = Unreachable(redis_client)
    relay = OutboxRelay(engine, lambda: publisher, clock=lambda: T0,
                        poll_interval_s=0.01, max_backoff_s=0.02)  # fmt: skip
    errors_before = metrics.OUTBOX_RELAY_ERRORS._value.get()
    task = asyncio.create_task(relay.run())
    try:
        await wait_for(lambda: publisher.failures >= 3, what="failed passes, retried")
        assert not task.done(), "the loop is still running"
        publisher.up = True
        await wait_for(lambda: _length(redis_client, stream, 1), what="published once Redis is up")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert metrics.OUTBOX_RELAY_ERRORS._value.get() >= errors_before + 3


async def _length(client: redis.asyncio.Redis, stream: str, n: int) -> bool:
    return bool(await client.xlen(keys.stream_key(stream)) == n)


async def test_published_rows_are_purged_after_the_retention(
    engine: AsyncEngine, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    await _record(engine, f"s.t{unique}", succeeded("pi_1"))
    now = {"t": T0}
    relay = OutboxRelay(engine, lambda: Publisher(redis_client), clock=lambda: now["t"],
                        retention=timedelta(days=1))  # fmt: skip
    assert await relay.relay_once() == 1
    assert await relay.purge() == 0
    now["t"] = T0 + timedelta(days=2)
    assert await relay.purge() == 1
    async with engine.connect() as conn:
        assert (await conn.execute(select(outbox))).all() == []
