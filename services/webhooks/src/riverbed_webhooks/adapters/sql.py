"""The endpoint registry and the delivery log over SQLAlchemy 2 (async): SQLite or PostgreSQL.

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
from pathlib import Path
from typing import Any

from sqlalchemy import Row, and_, delete, event, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from riverbed.outbox import OutboxMessage, add_to_outbox
from riverbed.sql import sqlite_url as sqlite_url  # re-exported: tests and the CLI use it
from riverbed_contracts import CloudEvent
from riverbed_contracts.registry import get_spec
from riverbed_webhooks.adapters.tables import attempts, deliveries, endpoints, outbox
from riverbed_webhooks.domain.model import (
    FAILED_STATUSES,
    FINISHED_STATUSES,
    Attempt,
    Delivery,
    DeliveryStatus,
    DisabledReason,
    Endpoint,
)

#: the endpoint columns an update writes (not id, created_at or the health clock)
_CONFIG_COLUMNS = (
    "url",
    "description",
    "event_types",
    "rate_limit_per_s",
    "max_concurrency",
    "enabled",
    "disabled_reason",
    "disabled_at",
    "secret",
    "previous_secret",
    "previous_secret_expires_at",
    "updated_at",
)


def create_engine(
    url: str, *, schema: str | None = None, connect_args: Mapping[str, Any] | None = None
) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets WAL, a busy timeout and its directory made.

    ``schema`` (PostgreSQL): the schema the tables live in (the connection's search_path).
    """
    parsed = make_url(url)
    connect_args = dict(connect_args or {})
    if schema is not None:
        if parsed.get_backend_name() != "postgresql":
            raise ValueError("a database schema can be set for PostgreSQL only")
        connect_args.setdefault("server_settings", {})["search_path"] = schema
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url, connect_args=dict(connect_args or {}), hide_parameters=True
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers don't block the writer
            cursor.execute("PRAGMA busy_timeout=5000")  # ms to wait for a lock
            cursor.close()

        return engine
    # hide_parameters: error messages must not carry signing secrets
    return create_async_engine(
        url, pool_pre_ping=True, connect_args=dict(connect_args or {}), hide_parameters=True
    )


def _endpoint(row: Row[Any]) -> Endpoint:
    values = dict(row._mapping)
    values.pop("failing_since", None)
    values.pop("last_success_at", None)
    values["event_types"] = tuple(values["event_types"] or ())
    return Endpoint.model_validate(values)


def _delivery(row: Row[Any]) -> Delivery:
    return Delivery.model_validate(dict(row._mapping))


def _attempt(row: Row[Any]) -> Attempt:
    return Attempt.model_validate(dict(row._mapping))


def registry_stream(event_type: str) -> str:
    """The stream the contracts registry gives ``event_type`` (no route applied)."""
    return get_spec(event_type).stream


class _Sql:
    """``stream_for``: event type -> the stream its events are appended to (routes applied);
    ``on_commit``: called after a transaction that queued events commits (wakes the relay)."""

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
        """INSERT … ON CONFLICT for this dialect (both support it the same way)."""
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        if self._dialect == "sqlite":
            return sqlite.insert(table)
        raise NotImplementedError(
            f"database {self._dialect!r} is not supported (SQLite, PostgreSQL)"
        )


class SqlEndpointRepository(_Sql):
    """:class:`~riverbed_webhooks.service_layer.ports.EndpointRepository` over SQL."""

    async def add(self, endpoint: Endpoint) -> None:
        values = endpoint.model_dump()
        values["event_types"] = list(endpoint.event_types)
        async with self.engine.begin() as conn:
            await conn.execute(insert(endpoints).values(**values))

    async def get(self, endpoint_id: str) -> Endpoint | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(endpoints).where(endpoints.c.id == endpoint_id))
            ).first()
        return None if row is None else _endpoint(row)

    async def page(self, *, limit: int, after: str | None = None) -> list[Endpoint]:
        query = select(endpoints).order_by(endpoints.c.id).limit(limit)
        if after is not None:
            query = query.where(endpoints.c.id > after)
        async with self.engine.connect() as conn:
            return [_endpoint(row) for row in await conn.execute(query)]

    async def list_enabled(self) -> list[Endpoint]:
        query = select(endpoints).where(endpoints.c.enabled.is_(True)).order_by(endpoints.c.id)
        async with self.engine.connect() as conn:
            return [_endpoint(row) for row in await conn.execute(query)]

    async def save(self, endpoint: Endpoint, *, reset_health: bool = False) -> None:
        values: dict[str, Any] = {name: getattr(endpoint, name) for name in _CONFIG_COLUMNS}
        values["event_types"] = list(endpoint.event_types)
        if reset_health:
            values["failing_since"] = None
        async with self.engine.begin() as conn:
            await conn.execute(
                update(endpoints).where(endpoints.c.id == endpoint.id).values(**values)
            )

    async def delete(self, endpoint_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(endpoints.delete().where(endpoints.c.id == endpoint_id))
        return bool(result.rowcount)

    async def disable(
        self,
        endpoint_id: str,
        reason: DisabledReason,
        at: datetime,
        *,
        report: CloudEvent | None = None,
    ) -> Endpoint | None:
        statement = (
            update(endpoints)
            .where(and_(endpoints.c.id == endpoint_id, endpoints.c.enabled.is_(True)))
            .values(enabled=False, disabled_reason=reason.value, disabled_at=at, updated_at=at)
            .returning(*endpoints.c)
        )
        queued: list[CloudEvent] = []
        async with self.engine.begin() as conn:
            row = (await conn.execute(statement)).first()
            if row is not None and report is not None:
                queued.append(report)  # only the call that disabled it reports it
                await self._queue(conn, queued, at)
        self._committed(queued)
        return None if row is None else _endpoint(row)

    async def record_failure(self, endpoint_id: str, at: datetime) -> datetime | None:
        statement = (
            update(endpoints)
            .where(endpoints.c.id == endpoint_id)
            .values(failing_since=func.coalesce(endpoints.c.failing_since, at))
            .returning(endpoints.c.failing_since)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else row[0]

    async def record_success(self, endpoint_id: str, at: datetime) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(endpoints)
                .where(endpoints.c.id == endpoint_id)
                .values(failing_since=None, last_success_at=at)
            )

    async def count_disabled(self) -> int:
        query = select(func.count()).select_from(endpoints).where(endpoints.c.enabled.is_(False))
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def failing_since(self, endpoint_id: str) -> datetime | None:
        query = select(endpoints.c.failing_since).where(endpoints.c.id == endpoint_id)
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).scalar_one_or_none()


class SqlDeliveryLog(_Sql):
    """:class:`~riverbed_webhooks.service_layer.ports.DeliveryLog` over SQL."""

    async def begin_task(self, delivery: Delivery) -> None:
        values = delivery.model_dump()
        statement = self._upsert(deliveries).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[deliveries.c.delivery_id],
            set_={
                "task_id": statement.excluded.task_id,
                "status": statement.excluded.status,
                "updated_at": statement.excluded.updated_at,
            },
            where=deliveries.c.task_id != statement.excluded.task_id,
        )
        async with self.engine.begin() as conn:
            await conn.execute(statement)

    async def record_attempt(
        self,
        attempt: Attempt,
        status: DeliveryStatus,
        *,
        event_type: str,
        event: dict[str, object],
        emit: Sequence[CloudEvent] = (),
    ) -> None:
        error = attempt.error
        row = {
            "delivery_id": attempt.delivery_id,
            "endpoint_id": attempt.endpoint_id,
            "event_id": attempt.event_id,
            "event_type": event_type,
            "event": event,
            "status": status.value,
            "task_id": attempt.task_id,
            "attempts": 1,
            "last_status_code": attempt.status_code,
            "last_error": error,
            "last_attempt_at": attempt.attempted_at,
            "created_at": attempt.attempted_at,
            "updated_at": attempt.attempted_at,
        }
        upsert = self._upsert(deliveries).values(**row)
        upsert = upsert.on_conflict_do_update(
            index_elements=[deliveries.c.delivery_id],
            set_={
                "status": status.value,
                "task_id": attempt.task_id,
                "attempts": deliveries.c.attempts + 1,
                "last_status_code": attempt.status_code,
                "last_error": error,
                "last_attempt_at": attempt.attempted_at,
                "updated_at": attempt.attempted_at,
            },
        )
        async with self.engine.begin() as conn:
            await conn.execute(insert(attempts).values(**attempt.model_dump(exclude={"id"})))
            await conn.execute(upsert)
            await self._queue(conn, emit, attempt.attempted_at)
        self._committed(emit)

    async def set_status(
        self,
        delivery_id: str,
        status: DeliveryStatus,
        *,
        error: str | None = None,
        at: datetime,
        emit: Sequence[CloudEvent] = (),
    ) -> None:
        values: dict[str, Any] = {"status": status.value, "updated_at": at}
        if error is not None:
            values["last_error"] = error
        async with self.engine.begin() as conn:
            await conn.execute(
                update(deliveries).where(deliveries.c.delivery_id == delivery_id).values(**values)
            )
            await self._queue(conn, emit, at)
        self._committed(emit)

    async def attempts_in_task(self, task_id: str) -> int:
        query = select(func.count()).select_from(attempts).where(attempts.c.task_id == task_id)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        query = select(deliveries).where(deliveries.c.delivery_id == delivery_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _delivery(row)

    async def prune(self, finished_before: datetime, *, limit: int) -> int:
        """Delete up to ``limit`` deliveries finished (succeeded, exhausted, dropped) before
        ``finished_before``, with their attempts, in one transaction; how many were deleted.

        A delivery a replay reopened in the meantime is no longer finished and is kept;
        replicas pruning at once delete each row once.
        """
        old_and_finished = and_(
            deliveries.c.status.in_([s.value for s in FINISHED_STATUSES]),
            deliveries.c.updated_at < finished_before,
        )
        chosen = select(deliveries.c.delivery_id).where(old_and_finished).limit(limit)
        async with self.engine.begin() as conn:
            deleted = [
                row.delivery_id
                for row in await conn.execute(
                    delete(deliveries)
                    .where(deliveries.c.delivery_id.in_(chosen.scalar_subquery()), old_and_finished)
                    .returning(deliveries.c.delivery_id)
                )
            ]
            if deleted:
                await conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(deleted)))
        return len(deleted)

    async def failed_deliveries(
        self, endpoint_id: str, since: datetime, *, limit: int
    ) -> list[Delivery]:
        query = (
            select(deliveries)
            .where(
                and_(
                    deliveries.c.endpoint_id == endpoint_id,
                    deliveries.c.status.in_([s.value for s in FAILED_STATUSES]),
                    deliveries.c.created_at >= since,
                )
            )
            .order_by(deliveries.c.created_at, deliveries.c.delivery_id)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [_delivery(row) for row in await conn.execute(query)]

    async def deliveries_for_event(self, event_id: str) -> list[Delivery]:
        query = (
            select(deliveries)
            .where(deliveries.c.event_id == event_id)
            .order_by(deliveries.c.endpoint_id)
        )
        async with self.engine.connect() as conn:
            return [_delivery(row) for row in await conn.execute(query)]

    async def deliveries_for_endpoint(
        self, endpoint_id: str, *, limit: int, status: Sequence[DeliveryStatus] = ()
    ) -> list[Delivery]:
        query = (
            select(deliveries)
            .where(deliveries.c.endpoint_id == endpoint_id)
            .order_by(deliveries.c.created_at.desc(), deliveries.c.delivery_id)
            .limit(limit)
        )
        if status:
            query = query.where(deliveries.c.status.in_([s.value for s in status]))
        async with self.engine.connect() as conn:
            return [_delivery(row) for row in await conn.execute(query)]

    async def attempts_for_endpoint(
        self, endpoint_id: str, *, limit: int, before: int | None = None
    ) -> list[Attempt]:
        query = (
            select(attempts)
            .where(attempts.c.endpoint_id == endpoint_id)
            .order_by(attempts.c.id.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(attempts.c.id < before)
        async with self.engine.connect() as conn:
            return [_attempt(row) for row in await conn.execute(query)]

    async def attempts_for_event(self, event_id: str, *, limit: int) -> list[Attempt]:
        query = (
            select(attempts)
            .where(attempts.c.event_id == event_id)
            .order_by(attempts.c.id)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [_attempt(row) for row in await conn.execute(query)]
