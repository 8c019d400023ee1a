"""The shared outbox relay on SQLite and PostgreSQL and a real Redis: at least once, under the
same event ids every time, in commit order, never the same row by two relays at once,
surviving an unreachable Redis, purging what it published past the retention.

Every test uses a table of its own (an SQLite file, or a PostgreSQL schema of its own) and
streams named with its token.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from sqlalchemy import MetaData, Table, event, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from riverbed import keys, outbox
from riverbed.outbox import OutboxMessage, OutboxRelay, add_to_outbox, outbox_table
from riverbed.publisher import Publisher
from riverbed.testing import make_event, scratch_database, wait_for
from riverbed_contracts import CloudEvent, event_from_entry

pytestmark = pytest.mark.integration

POSTGRES_URL = os.environ.get(
    "RIVERBED_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SERVICE = "outbox-test"


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database: an SQLite file (WAL, 5 s busy timeout, as the services
    configure it) or a PostgreSQL schema of this test's own."""
    async with scratch_database(
        request.param,
        sqlite_file=tmp_path / "outbox.db",
        postgres_url=POSTGRES_URL,
        schema=f"rb_outbox_{unique}",
        url_setting="RIVERBED_TEST_POSTGRES_URL",
    ) as scratch:
        if scratch.schema is None:
            made = create_async_engine(scratch.url)

            @event.listens_for(made.sync_engine, "connect")
            def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA busy_timeout=5000")  # ms
                cursor.close()

        else:
            made = create_async_engine(
                scratch.url, connect_args={"server_settings": {"search_path": scratch.schema}}
            )
        try:
            yield made
        finally:
            await made.dispose()


@pytest.fixture
async def table(engine: AsyncEngine) -> Table:
    metadata = MetaData()
    made = outbox_table(metadata, "outbox")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return made


async def queue(engine: AsyncEngine, table: Table, stream: str, *events: CloudEvent) -> None:
    """Each event queued in a transaction of its own, as services do with their changes."""
    for queued in events:
        async with engine.begin() as conn:
            await add_to_outbox(conn, table, [OutboxMessage(queued, stream)], at=T0)


async def ids_on(client: redis.asyncio.Redis, stream: str) -> list[str]:
    return [event_from_entry(f).id for _, f in await client.xrange(keys.stream_key(stream))]


def relay(engine: AsyncEngine, table: Table, client: redis.asyncio.Redis, **options: Any) -> Any:
    options.setdefault("clock", lambda: T0)
    return OutboxRelay(engine, table, lambda: Publisher(client), service=SERVICE, **options)


class CrashAfterAppend(OutboxRelay):
    """A relay whose process 'dies' after appending to Redis, before its commit."""

    crashes = 1

    async def _mark_published(self, conn: AsyncConnection, ids: list[int], at: datetime) -> None:
        if self.crashes:
            self.crashes -= 1
            raise ConnectionError("killed between the append and the commit")
        await super()._mark_published(conn, ids, at)


async def test_a_crash_between_append_and_commit_appends_again_under_the_same_ids(
    engine: AsyncEngine, table: Table, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"outbox.t{unique}"
    await queue(engine, table, stream, make_event(1), make_event(2))
    crashing = CrashAfterAppend(engine, table, lambda: Publisher(redis_client),
                                service=SERVICE, clock=lambda: T0)  # fmt: skip
    with pytest.raises(ConnectionError):
        await crashing.relay_once()
    assert await crashing.sample() == (2, pytest.approx(0.0)), "still unpublished: rolled back"
    assert await crashing.relay_once() == 2
    assert await crashing.relay_once() == 0
    ids = await ids_on(redis_client, stream)
    assert (len(ids), len(set(ids))) == (4, 2), "each event twice, under one id"
    assert ids[:2] == ids[2:], "in commit order both times"
    assert await crashing.sample() == (0, 0.0)


async def test_the_same_event_id_is_queued_once_and_a_rolled_back_change_queues_nothing(
    engine: AsyncEngine, table: Table
) -> None:
    first = make_event(1)
    await queue(engine, table, "s", first, first)
    async with engine.begin() as conn:  # twice within one statement too
        await add_to_outbox(conn, table, [OutboxMessage(first, "s")] * 2, at=T0)
    with pytest.raises(RuntimeError, match="the change failed"):
        await _queue_then_fail(engine, table)
    async with engine.connect() as conn:
        assert (await conn.execute(select(table.c.event_id))).scalars().all() == [first.id]


async def _queue_then_fail(engine: AsyncEngine, table: Table) -> None:
    async with engine.begin() as conn:
        await add_to_outbox(conn, table, [OutboxMessage(make_event(2), "s")], at=T0)
        raise RuntimeError("the change failed after its event was queued")


class Held(Publisher):
    """A publisher that stops inside its first append until released."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        super().__init__(client)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def publish_many(self, events: Sequence[CloudEvent], **options: Any) -> list[str]:
        self.entered.set()
        await self.release.wait()
        return await super().publish_many(events, **options)


async def test_two_relays_at_once_append_a_row_once_on_postgresql_at_most_twice_on_sqlite(
    engine: AsyncEngine, table: Table, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"outbox.t{unique}"
    events = [make_event(n) for n in range(4)]
    await queue(engine, table, stream, *events)
    held = Held(redis_client)
    first = OutboxRelay(engine, table, lambda: held, service=SERVICE, clock=lambda: T0,
                        batch_size=2)  # fmt: skip
    second = relay(engine, table, redis_client, batch_size=2)
    first_pass = asyncio.create_task(first.relay_once())
    await wait_for(held.entered.is_set, what="the first relay inside its append")
    if engine.dialect.name == "postgresql":
        # SKIP LOCKED: the second takes the next batch at once, without waiting
        assert await second.relay_once() == 2
        held.release.set()
        assert await first_pass == 2
        assert await second.relay_once() == 0
        ids = await ids_on(redis_client, stream)
        assert sorted(ids) == sorted(e.id for e in events), "every row appended once"
        return
    # SQLite: no row locks, and no write lock held while appending: the second relay
    # takes the same batch, so those rows are appended twice, under their one event id
    assert await second.relay_once() == 2
    held.release.set()
    assert await first_pass == 2
    while await second.relay_once():
        pass
    ids = await ids_on(redis_client, stream)
    assert set(ids) == {e.id for e in events}, "every row appended"
    assert len(ids) == 6, "the first batch twice, under the same ids"


async def test_on_sqlite_a_relay_waiting_for_redis_holds_no_lock_on_the_database(
    engine: AsyncEngine, table: Table, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"outbox.t{unique}"
    await queue(engine, table, stream, make_event(1))
    held = Held(redis_client)
    stuck = OutboxRelay(engine, table, lambda: held, service=SERVICE, clock=lambda: T0)
    appending = asyncio.create_task(stuck.relay_once())
    await wait_for(held.entered.is_set, what="the relay inside its append")
    # a service's next change commits while the relay waits (on SQLite too)
    await queue(engine, table, stream, make_event(2))
    held.release.set()
    assert await appending == 1
    assert await stuck.relay_once() == 1


class Unreachable(Publisher):
    """A publisher whose Redis does not answer (until ``up`` is set)."""

    up = False
    failures = 0

    async def publish_many(self, events: Sequence[CloudEvent], **options: Any) -> list[str]:
        if not self.up:
            self.failures += 1
            raise ConnectionRefusedError("Redis is down")
        return await super().publish_many(events, **options)


async def test_the_relay_loop_survives_an_unreachable_redis_and_catches_up(
    engine: AsyncEngine, table: Table, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"outbox.t{unique}"
    await queue(engine, table, stream, make_event(1))
    publisher = Unreachable(redis_client)
    looping = OutboxRelay(engine, table, lambda: publisher, service=SERVICE, clock=lambda: T0,
                          poll_interval_s=0.01, max_backoff_s=0.02)  # fmt: skip
    errors = outbox.RELAY_ERRORS.labels(SERVICE)
    errors_before = errors._value.get()
    task = asyncio.create_task(looping.run())
    try:
        await wait_for(lambda: publisher.failures >= 3, what="failed passes, retried")
        assert not task.done(), "the loop is still running"
        publisher.up = True
        await wait_for(lambda: _length(redis_client, stream, 1), what="appended once Redis is up")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert errors._value.get() >= errors_before + 3


async def _length(client: redis.asyncio.Redis, stream: str, n: int) -> bool:
    return bool(await client.xlen(keys.stream_key(stream)) == n)


async def test_a_commit_in_the_process_wakes_the_loop_before_its_next_poll(
    engine: AsyncEngine, table: Table, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"outbox.t{unique}"
    # a poll far beyond the wait below: only notify() can get the event out in time
    looping = relay(engine, table, redis_client, poll_interval_s=3600)
    task = asyncio.create_task(looping.run())
    try:
        await wait_for(lambda: _sampled(looping), what="the loop's first (empty) pass")
        await queue(engine, table, stream, make_event(1))
        looping.notify()
        await wait_for(lambda: _length(redis_client, stream, 1), what="the woken pass")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _sampled(looping: OutboxRelay) -> bool:
    return not looping._wake.is_set() and looping._next_purge > 0


async def test_published_rows_are_purged_after_the_retention_in_batches(
    engine: AsyncEngine, table: Table, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"outbox.t{unique}"
    await queue(engine, table, stream, *(make_event(n) for n in range(5)))
    now = {"t": T0}
    purging = relay(engine, table, redis_client, clock=lambda: now["t"],
                    retention=timedelta(days=1), purge_batch=2)  # fmt: skip
    assert await purging.relay_once() == 5
    await queue(engine, table, stream, make_event(9))  # unpublished: never purged
    assert await purging.purge() == 0, "within the retention"
    now["t"] = T0 + timedelta(days=2)
    purged = outbox.PURGED.labels(SERVICE)
    before = purged._value.get()
    assert await purging.purge() == 5
    assert purged._value.get() == before + 5
    async with engine.connect() as conn:
        left = (await conn.execute(select(table.c.published_at))).scalars().all()
    assert left == [None]


async def test_metrics_carry_the_service_and_the_event_type(
    engine: AsyncEngine, table: Table, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"outbox.t{unique}"
    first = make_event(1)
    await queue(engine, table, stream, first, make_event(2))
    counting = relay(engine, table, redis_client, clock=lambda: T0 + timedelta(seconds=3))
    assert await counting.sample() == (2, 3.0)
    assert outbox.BACKLOG.labels(SERVICE)._value.get() == 2
    assert outbox.OLDEST_AGE.labels(SERVICE)._value.get() == 3.0
    published = outbox.PUBLISHED.labels(SERVICE, first.type)
    before = published._value.get()
    assert await counting.relay_once() == 2
    assert published._value.get() == before + 2
    assert await counting.sample() == (0, 0.0)
    assert outbox.BACKLOG.labels(SERVICE)._value.get() == 0


def test_the_table_has_the_documented_shape_and_index_names() -> None:
    made = outbox_table(MetaData(), "webhook_outbox")
    assert [c.name for c in made.columns] == [
        "id", "event_id", "stream", "type", "event", "created_at", "published_at",
    ]  # fmt: skip
    assert made.c.event_id.unique
    assert not made.c.event_id.nullable
    assert made.c.published_at.nullable
    assert sorted(i.name for i in made.indexes if i.name) == [
        "ix_webhook_outbox_published_at", "ix_webhook_outbox_unpublished",
    ]  # fmt: skip
