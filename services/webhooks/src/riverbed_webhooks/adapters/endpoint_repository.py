"""The endpoint registry over SQL: the
:class:`~riverbed_webhooks.service_layer.ports.EndpointRepository` port.

A disabling is one conditional UPDATE, so of many replicas racing to disable an endpoint
exactly one does, and only that one queues the report in the outbox.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, func, insert, select, update

from riverbed_contracts import CloudEvent
from riverbed_webhooks.adapters.sql import SqlStore
from riverbed_webhooks.adapters.tables import endpoints
from riverbed_webhooks.domain.model import DisabledReason, Endpoint

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


def _endpoint(row: Row[Any]) -> Endpoint:
    values = dict(row._mapping)
    values.pop("failing_since", None)
    values.pop("last_success_at", None)
    values["event_types"] = tuple(values["event_types"] or ())
    return Endpoint.model_validate(values)


class SqlEndpointRepository(SqlStore):
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
