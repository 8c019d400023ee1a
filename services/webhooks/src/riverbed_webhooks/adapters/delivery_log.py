"""The delivery log over SQL (:class:`~riverbed_webhooks.service_layer.ports.DeliveryLog`):
one row per (event, endpoint) delivery with its counters, one per attempt.

An attempt, its delivery's new status and the outcome event reporting it are written in
one transaction; the delivery's counters are an upsert, so replicas racing on one
delivery each count once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, delete, func, insert, select, update

from riverbed_contracts import CloudEvent
from riverbed_webhooks.adapters.sql import SqlStore
from riverbed_webhooks.adapters.tables import attempts, deliveries
from riverbed_webhooks.domain.model import (
    FAILED_STATUSES,
    FINISHED_STATUSES,
    Attempt,
    Delivery,
    DeliveryStatus,
)


def _delivery(row: Row[Any]) -> Delivery:
    return Delivery.model_validate(dict(row._mapping))


def _attempt(row: Row[Any]) -> Attempt:
    return Attempt.model_validate(dict(row._mapping))


class SqlDeliveryLog(SqlStore):
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
