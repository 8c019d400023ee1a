"""What the webhooks SQL adapters share (SQLAlchemy 2, async: SQLite or PostgreSQL): the
engine, and the base of the endpoint repository (:mod:`.endpoint_repository`) and the
delivery log (:mod:`.delivery_log`).

One engine per process, made by :func:`create_engine` in the composition root.
Every method is one short transaction. Changes that many replicas may race on
(disabling an endpoint, the failure clock, a delivery's counters) are single
conditional statements, so the database settles the race.

The events reporting a change (an outcome, a disabling) are queued in the outbox
(``webhook_outbox``, the runtime's :mod:`riverbed.outbox`) in the change's own
transaction; after the commit the relay is woken (``on_commit``) to append them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from riverbed import sql
from riverbed.outbox import OutboxMessage, add_to_outbox
from riverbed.sql import sqlite_url as sqlite_url  # re-exported: tests and the CLI use it
from riverbed.sql import upsert
from riverbed_contracts import CloudEvent
from riverbed_contracts.registry import get_spec
from riverbed_webhooks.adapters.tables import outbox


def create_engine(
    url: str, *, schema: str | None = None, connect_args: Mapping[str, Any] | None = None
) -> AsyncEngine:
    """An async engine for ``url`` (the runtime's :func:`riverbed.sql.create_engine`);
    SQLite gets WAL, a 5 s busy timeout and its directory made.

    ``schema`` (PostgreSQL): the schema the tables live in (the connection's search_path).
    """
    return sql.create_engine(url, schema=schema, connect_args=connect_args, busy_timeout_ms=5_000)


def registry_stream(event_type: str) -> str:
    """The stream the contracts registry gives ``event_type`` (no route applied)."""
    return get_spec(event_type).stream


class SqlStore:
    """The base of the SQL adapters. ``stream_for``: event type -> the stream its events are
    appended to (routes applied); ``on_commit``: called after a transaction that queued
    events commits (wakes the relay)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        stream_for: Callable[[str], str] = registry_stream,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        self.stream_for = stream_for
        self.on_commit = on_commit

    async def _queue(
        self, conn: AsyncConnection, events: Sequence[CloudEvent], at: datetime
    ) -> None:
        messages = [OutboxMessage(e, self.stream_for(e.type)) for e in events]
        await add_to_outbox(conn, outbox, messages, at=at)

    def _committed(self, events: Sequence[CloudEvent]) -> None:
        if events and self.on_commit is not None:
            self.on_commit()

    def _upsert(self, table: Any) -> Any:
        """INSERT … ON CONFLICT for this engine's dialect."""
        return upsert(self._dialect, table)
