"""Manual replay: deliver again one delivery, or every failed delivery of an endpoint since a time.

A replay is a new task (a fresh CloudEvent id, so the delivery consumer's
idempotency does not skip it) of the same delivery: same ``delivery_id``, same
``webhook-id``, and a full retry schedule of its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from riverbed_contracts import DeliverWebhook, WebhookEvent
from riverbed_contracts.registry import new_event
from riverbed_webhooks import SOURCE, metrics
from riverbed_webhooks.domain.model import Delivery, DeliveryStatus
from riverbed_webhooks.service_layer.errors import Conflict, NotFound
from riverbed_webhooks.service_layer.ports import (
    Clock,
    DeliveryLog,
    EndpointRepository,
    EventPublisher,
)

#: most deliveries one "replay failed since" call re-queues
MAX_REPLAY = 10_000


@dataclass
class Replayer:
    repository: EndpointRepository
    log: DeliveryLog
    publisher: EventPublisher
    clock: Clock

    async def replay(self, delivery_id: str) -> str:
        """Queue the delivery again; the new task's id."""
        delivery = await self.log.get_delivery(delivery_id)
        if delivery is None:
            raise NotFound("delivery", delivery_id)
        await self._endpoint_accepts(delivery.endpoint_id)
        (task_id,) = await self._queue([delivery])
        return task_id

    async def replay_failed(
        self, endpoint_id: str, since: datetime, *, limit: int = MAX_REPLAY
    ) -> list[str]:
        """Queue again every exhausted or dropped delivery of the endpoint made since ``since``."""
        await self._endpoint_accepts(endpoint_id)
        failed = await self.log.failed_deliveries(endpoint_id, since, limit=min(limit, MAX_REPLAY))
        return await self._queue(failed) if failed else []

    async def _endpoint_accepts(self, endpoint_id: str) -> None:
        endpoint = await self.repository.get(endpoint_id)
        if endpoint is None:
            raise NotFound("endpoint", endpoint_id)
        if not endpoint.enabled:
            raise Conflict(f"endpoint {endpoint_id!r} is disabled: enable it, then replay")

    async def _queue(self, deliveries: list[Delivery]) -> list[str]:
        task_ids = [str(uuid.uuid4()) for _ in deliveries]
        events = [
            new_event(
                DeliverWebhook(
                    delivery_id=d.delivery_id,
                    endpoint_id=d.endpoint_id,
                    event=WebhookEvent.model_validate(d.event),
                ),
                id=task_id,
                subject=d.endpoint_id,
                source=SOURCE,
            )
            for d, task_id in zip(deliveries, task_ids, strict=True)
        ]
        # published first: a task whose log row is missing makes it itself; a row without a
        # task would say "pending" forever
        await self.publisher.publish_many(events)
        now = self.clock()
        for d, task_id in zip(deliveries, task_ids, strict=True):
            await self.log.begin_task(
                d.model_copy(
                    update={"task_id": task_id, "status": DeliveryStatus.PENDING, "updated_at": now}
                )
            )
        metrics.TASKS_CREATED.labels("replay").inc(len(events))
        return task_ids
