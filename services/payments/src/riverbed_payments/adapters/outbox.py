"""The transactional outbox's relay: committed events out to Redis Streams, at least once.

Handlers and the reconciliation job write the events they emit into the ``outbox``
table in the same database transaction as the change they report; nothing is
published from inside that transaction. This relay then, in one database transaction
per batch: takes the oldest unpublished rows (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so replicas take disjoint batches; SQLite's write lock serialises),
appends them to their streams, marks them published and commits.

A crash (or a failed commit) after the append and before the commit leaves the rows
unpublished: they are appended again on the next pass or by the next process. That
is the at-least-once half; the other half is that every outbox event id is
deterministic (a UUID5 of what it reports), so the copy carries the same id and
consumers' idempotency (per group and event id) drops it. Within one relay, rows are
published in the order they were committed; across replicas there is no order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from riverbed.publisher import Publisher
from riverbed_contracts import CloudEvent
from riverbed_payments import metrics
from riverbed_payments.adapters.sql import READ_ONLY
from riverbed_payments.adapters.tables import outbox

log = structlog.get_logger(__name__)


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        publisher: Callable[[], Publisher],
        *,
        clock: Callable[[], datetime],
        batch_size: int = 200,
        poll_interval_s: float = 0.5,
        retention: timedelta = timedelta(days=7),
        max_backoff_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.reader = engine.execution_options(**{READ_ONLY: True})
        self.publisher = publisher
        self.clock = clock
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.retention = retention
        self.max_backoff_s = max_backoff_s
        self._wake = asyncio.Event()
        self._next_purge = 0.0

    def notify(self) -> None:
        """Something was committed to the outbox: relay it now rather than at the next poll."""
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish one batch of unpublished events; returns how many."""
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(outbox.c.id, outbox.c.stream, outbox.c.event)
                    .where(outbox.c.published_at.is_(None))
                    .order_by(outbox.c.id)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            publisher = self.publisher()
            by_stream: dict[str, list[CloudEvent]] = {}
            for row in rows:
                by_stream.setdefault(row.stream, []).append(
                    CloudEvent.model_validate_json(row.event)
                )
            for stream, events in by_stream.items():
                # validated when written to the outbox (new_event / the handler's models)
                await publisher.publish_many(events, stream=stream, validated=True)
            await self._mark_published(conn, [row.id for row in rows])
        for events in by_stream.values():
            for event in events:
                metrics.OUTBOX_PUBLISHED.labels(event.type).inc()
        return len(rows)

    async def _mark_published(self, conn: AsyncConnection, ids: list[int]) -> None:
        await conn.execute(
            update(outbox).where(outbox.c.id.in_(ids)).values(published_at=self.clock())
        )

    async def sample(self) -> tuple[int, float]:
        """Backlog (rows) and age of the oldest unpublished row (s); also set as gauges."""
        async with self.reader.connect() as conn:
            count, oldest = (
                await conn.execute(
                    select(func.count(), func.min(outbox.c.created_at)).where(
                        outbox.c.published_at.is_(None)
                    )
                )
            ).one()
        age = 0.0
        if oldest is not None:
            if oldest.tzinfo is None:  # min() over SQLite text loses the type decorator
                oldest = datetime.fromisoformat(str(oldest)).replace(tzinfo=self.clock().tzinfo)
            age = max((self.clock() - oldest).total_seconds(), 0.0)
        metrics.OUTBOX_BACKLOG.set(int(count))
        metrics.OUTBOX_OLDEST_AGE.set(age)
        return int(count), age

    async def purge(self) -> int:
        """Delete rows published longer ago than the retention (they are in Redis)."""
        cutoff = self.clock() - self.retention
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(outbox).where(outbox.c.published_at < cutoff))
        return int(result.rowcount or 0)

    async def run(self) -> None:
        """Relay until cancelled; survives Redis and database failures (backs off, retries)."""
        failures = 0
        while True:
            self._wake.clear()
            try:
                published = await self.relay_once()
                await self.sample()
                if time.monotonic() >= self._next_purge:
                    self._next_purge = time.monotonic() + 3600.0  # s: hourly is plenty
                    purged = await self.purge()
                    if purged:
                        log.info("outbox rows purged", count=purged)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failures += 1
                metrics.OUTBOX_RELAY_ERRORS.inc()
                delay = min(self.poll_interval_s * 2**failures, self.max_backoff_s)
                log.warning(
                    "outbox relay failed; will retry",
                    error_type=type(error).__name__,
                    error=str(error),
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                continue
            if published >= self.batch_size:
                continue  # more waiting: no pause
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)
