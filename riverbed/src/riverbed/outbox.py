"""The transactional outbox: events written with the change they report, relayed to streams.

A service that owns a database (``riverbed[sql]``) never publishes from inside a database
transaction, and never publishes after one either, where a crash or a Redis outage between
the commit and the append would lose the event. It writes each event it emits into its
outbox table **in the same transaction** as the change the event reports
(:func:`add_to_outbox`); the :class:`OutboxRelay` then appends committed rows to their
streams. Either both the change and its event are committed, or neither.

The table (:func:`outbox_table`), one per service database:

=================  ===========================================================
``id``             BIGINT (SQLite: INTEGER) primary key, autoincrement: commit order
``event_id``       the CloudEvent id, UNIQUE: the same event is queued once
``stream``         the stream it is appended to (routes already applied)
``type``           its event type (metrics, operators)
``event``          the CloudEvents JSON document, appended as is
``created_at``     when it was queued (UTC)
``published_at``   when the relay appended it (UTC); NULL while waiting
=================  ===========================================================

with a partial index on ``id`` over the unpublished rows and an index on ``published_at``
(retention). Payments' ``outbox`` and webhooks' ``webhook_outbox`` have this shape.

The relay, on PostgreSQL in one database transaction per batch: takes the oldest
unpublished rows ``FOR UPDATE SKIP LOCKED`` (replicas take disjoint batches), appends
them to their streams, marks them published and commits. On SQLite, whose one write
lock must not be held while Redis is slow or away (every writer of the database would
wait for it), it reads the batch, appends it, then marks it in a short write
transaction; relays in two processes on one SQLite file may then append a row twice.
A crash or a failed commit after the append leaves the rows unpublished: they are
appended again by the next pass of any replica. That is the at-least-once half; the
other half is that every event a service queues has a deterministic id (a UUID5 of the
fact it reports), so the copy carries the same id and consumers' idempotency (per group
and event id) drops it.

Within one relay, rows are appended in the order they were queued (by id; on PostgreSQL a
row whose transaction commits late follows rows queued after it); across replicas there
is no order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import (
    Column,
    Index,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from riverbed import eventloop
from riverbed.backoff import Backoff
from riverbed.publisher import Publisher
from riverbed.sql import BigId, DatabaseServiceSettings, UtcDateTime, upsert
from riverbed_contracts import CloudEvent

log = structlog.get_logger(__name__)

# Defined here rather than in riverbed.metrics: only services with a database import this
# module, so the others do not expose empty outbox families. ``service`` is the service
# name (a handful of values); ``type`` a registered event type.
BACKLOG: Final = Gauge(
    "riverbed_outbox_backlog", "Outbox events committed and not yet appended", ["service"]
)
OLDEST_AGE: Final = Gauge(
    "riverbed_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox event (0 when none)",
    ["service"],
)
PUBLISHED: Final = Counter(
    "riverbed_outbox_published_total", "Outbox events appended to streams", ["service", "type"]
)
RELAY_ERRORS: Final = Counter(
    "riverbed_outbox_relay_errors_total",
    "Relay passes that failed (Redis or database down) and were retried",
    ["service"],
)
PURGED: Final = Counter(
    "riverbed_outbox_purged_total", "Published outbox rows deleted past the retention", ["service"]
)
DELAY_SECONDS: Final = Histogram(
    "riverbed_outbox_delay_seconds",
    "From an event's commit to the outbox to its append to its stream",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def outbox_table(metadata: MetaData, name: str = "outbox") -> Table:
    """The outbox table ``name`` in ``metadata`` (see the module doc for its shape).

    Index names derive from ``name`` (``ix_<name>_unpublished``, ``ix_<name>_published_at``);
    a service's Alembic migration creates the same table with its columns written out.
    """
    table = Table(
        name,
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("event_id", String(255), nullable=False, unique=True),
        Column("stream", String(255), nullable=False),  # the stream actually written
        Column("type", String(255), nullable=False),
        Column("event", Text, nullable=False),  # the CloudEvents JSON document, as appended
        Column("created_at", UtcDateTime, nullable=False),
        Column("published_at", UtcDateTime, nullable=True),
    )
    unpublished = table.c.published_at.is_(None)
    Index(f"ix_{name}_unpublished", table.c.id, postgresql_where=unpublished,
          sqlite_where=unpublished)  # fmt: skip
    Index(f"ix_{name}_published_at", table.c.published_at)
    return table


@dataclass(frozen=True)
class OutboxMessage:
    """An event to append once the transaction commits, and the stream it goes to."""

    event: CloudEvent
    stream: str


async def add_to_outbox(
    conn: AsyncConnection, table: Table, messages: Sequence[OutboxMessage], *, at: datetime
) -> None:
    """Queue events on ``conn``, inside the caller's transaction; an event id already queued
    (the same fact reported again, e.g. by a redelivery) is not queued again."""
    if not messages:
        return
    rows = [
        {
            "event_id": m.event.id,
            "stream": m.stream,
            "type": m.event.type,
            "event": m.event.to_json(),
            "created_at": at,
        }
        for m in messages
    ]
    await conn.execute(
        upsert(conn.dialect.name, table)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["event_id"])
    )


class OutboxRelay:
    """Appends a service's committed outbox rows to their streams (see the module doc).

    ``publisher`` is called for each pass (the service's Redis may be reconnected);
    ``reader``: an engine for the read-only samples (payments' SQLite engine begins its
    write transactions IMMEDIATE and offers a deferred variant); default ``engine``.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        table: Table,
        publisher: Callable[[], Publisher],
        *,
        service: str,
        clock: Callable[[], datetime],
        batch_size: int = 200,
        poll_interval_s: float = 0.5,
        retention: timedelta = timedelta(days=7),
        max_backoff_s: float = 5.0,
        purge_interval_s: float = 3600.0,
        purge_batch: int = 10_000,
        reader: AsyncEngine | None = None,
    ) -> None:
        self.engine = engine
        self.reader = reader or engine
        self.table = table
        self.publisher = publisher
        self.service = service
        self.clock = clock
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.retention = retention
        self.purge_interval_s = purge_interval_s
        self.purge_batch = purge_batch
        # after a failed pass: the poll interval, doubling, capped, ±20 % so replicas spread
        self.backoff = Backoff(
            base_ms=int(poll_interval_s * 1000), max_ms=int(max_backoff_s * 1000), jitter=0.2
        )
        self._wake = asyncio.Event()
        self._next_purge = 0.0  # monotonic s
        self._next_sample = 0.0  # monotonic s
        # series exist (at 0) from the start, so dashboards and alerts see the service
        self._backlog = BACKLOG.labels(service)
        self._oldest_age = OLDEST_AGE.labels(service)
        self._errors = RELAY_ERRORS.labels(service)
        self._delay = DELAY_SECONDS.labels(service)

    def notify(self) -> None:
        """Something was committed to the outbox: relay it now rather than at the next poll."""
        self._wake.set()

    # -- one pass ----------------------------------------------------------------------

    async def relay_once(self) -> int:
        """Append one batch of unpublished events and mark it published; how many."""
        if self.engine.dialect.name == "postgresql":
            # one transaction: the rows stay locked (SKIP LOCKED: replicas take disjoint
            # batches) until they are marked; writers of new rows are not held up
            async with self.engine.begin() as conn:
                rows = await self._take(conn, lock=True)
                if rows:
                    await self._append(rows)
                    now = self.clock()
                    await self._mark_published(conn, [row.id for row in rows], now)
        else:
            # SQLite has no row locks, and its one write lock must not be held while Redis
            # is slow or away (every handler's commit would wait on it): read, append, then
            # mark in a short write transaction. Relays in two processes may append a row
            # twice, under its one event id (consumers drop the copy).
            async with self.reader.connect() as conn:
                rows = await self._take(conn, lock=False)
            if rows:
                await self._append(rows)
                now = self.clock()
                async with self.engine.begin() as conn:
                    await self._mark_published(conn, [row.id for row in rows], now)
        for row in rows:
            PUBLISHED.labels(self.service, row.type).inc()
            self._delay.observe(max((now - row.created_at).total_seconds(), 0.0))
        return len(rows)

    async def flush(self, *, max_batches: int = 100) -> int:
        """Append what is unpublished now, batch after batch (at shutdown, once the handlers
        have drained: their last events go out with this replica); how many."""
        total = 0
        for _ in range(max_batches):
            appended = await self.relay_once()
            total += appended
            if not appended:
                break
        return total

    async def _take(self, conn: AsyncConnection, *, lock: bool) -> Sequence[Any]:
        t = self.table
        query = (
            select(t.c.id, t.c.stream, t.c.type, t.c.event, t.c.created_at)
            .where(t.c.published_at.is_(None))
            .order_by(t.c.id)
            .limit(self.batch_size)
        )
        if lock:
            query = query.with_for_update(skip_locked=True)
        return (await conn.execute(query)).all()

    async def _append(self, rows: Sequence[Any]) -> None:
        """Append the rows' events to their streams, in row order within each stream."""
        by_stream: dict[str, list[CloudEvent]] = {}
        for row in rows:
            by_stream.setdefault(row.stream, []).append(CloudEvent.model_validate_json(row.event))
        publisher = self.publisher()
        for stream, events in by_stream.items():
            # validated before they were queued (new_event and the payload models)
            await publisher.publish_many(events, stream=stream, validated=True)

    async def _mark_published(self, conn: AsyncConnection, ids: list[int], at: datetime) -> None:
        t = self.table
        await conn.execute(
            update(t)
            .where(t.c.id.in_(ids), t.c.published_at.is_(None))  # a copy keeps the first time
            .values(published_at=at)
        )

    # -- upkeep ------------------------------------------------------------------------

    async def sample(self) -> tuple[int, float]:
        """Backlog (rows) and age of the oldest unpublished row (s); also set as gauges."""
        t = self.table
        async with self.reader.connect() as conn:
            count, oldest = (
                await conn.execute(
                    select(func.count(), func.min(t.c.created_at)).where(t.c.published_at.is_(None))
                )
            ).one()
        age = 0.0
        if oldest is not None:
            if not isinstance(oldest, datetime):  # min() over SQLite text loses the type
                oldest = datetime.fromisoformat(str(oldest))
            if oldest.tzinfo is None:  # SQLite stores naive UTC
                oldest = oldest.replace(tzinfo=UTC)
            age = max((self.clock() - oldest).total_seconds(), 0.0)
        self._backlog.set(int(count))
        self._oldest_age.set(age)
        return int(count), age

    async def purge(self) -> int:
        """Delete rows published longer ago than the retention (they are in Redis), a batch
        per transaction so a long backlog of old rows never holds one huge transaction."""
        t = self.table
        cutoff = self.clock() - self.retention
        purged = 0
        while True:
            chosen = (
                select(t.c.id)
                .where(t.c.published_at < cutoff)
                .order_by(t.c.id)
                .limit(self.purge_batch)
            )
            async with self.engine.begin() as conn:
                result = await conn.execute(delete(t).where(t.c.id.in_(chosen.scalar_subquery())))
            deleted = int(result.rowcount or 0)
            purged += deleted
            if deleted < self.purge_batch:
                break
        if purged:
            PURGED.labels(self.service).inc(purged)
        return purged

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Relay until cancelled; survives Redis and database failures (backs off, retries)."""
        failures = 0
        while True:
            self._wake.clear()
            try:
                published = await self.relay_once()
                if time.monotonic() >= self._next_sample:
                    # at most once a poll interval: under load a pass runs per few commits,
                    # and the gauges need no more than that
                    self._next_sample = time.monotonic() + self.poll_interval_s
                    await self.sample()
                if time.monotonic() >= self._next_purge:
                    self._next_purge = time.monotonic() + self.purge_interval_s
                    purged = await self.purge()
                    if purged:
                        log.info("outbox rows purged", count=purged, table=self.table.name)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failures += 1
                self._errors.inc()
                delay_s = self.backoff.delay_ms(failures) / 1000
                log.warning(
                    "outbox relay failed; will retry",
                    error_type=type(error).__name__,
                    error=str(error),
                    retry_in_s=delay_s,
                )
                await asyncio.sleep(delay_s)  # back off: Redis or the database is down
                continue
            # redis-py can swallow a cancellation inside a command: honour it here
            eventloop.raise_if_cancelled()
            if published >= self.batch_size:
                continue  # more waiting: no pause
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)


def outbox_relay(
    settings: DatabaseServiceSettings,
    engine: AsyncEngine,
    table: Table,
    publisher: Callable[[], Publisher],
    *,
    clock: Callable[[], datetime],
    reader: AsyncEngine | None = None,
) -> OutboxRelay:
    """The relay of ``table`` as a service's ``<PREFIX>OUTBOX_*`` settings configure it
    (:class:`riverbed.sql.DatabaseServiceSettings`), labelled with its service name: every
    service with a database wires its relay this one way."""
    return OutboxRelay(
        engine,
        table,
        publisher,
        service=settings.service_name,
        clock=clock,
        batch_size=settings.outbox_batch_size,
        poll_interval_s=settings.outbox_poll_interval_s,
        retention=timedelta(seconds=settings.outbox_retention_s),
        max_backoff_s=settings.outbox_max_backoff_s,
        reader=reader,
    )
