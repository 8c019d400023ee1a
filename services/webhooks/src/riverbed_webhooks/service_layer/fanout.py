"""Fan-out: one subscribed event becomes one delivery task per matching endpoint.

The tasks go to the service's own delivery stream, so that each endpoint's
deliveries are separate entries: one slow or failing endpoint is retried on its
own schedule and never holds up another. The handler returns them, so they are
published before the source event is acknowledged; their ids are deterministic,
so a redelivered source event makes the same tasks, which the delivery consumer
then skips as duplicates.
"""

from __future__ import annotations

from riverbed_contracts import CloudEvent, DeliverWebhook, WebhookEvent
from riverbed_contracts.registry import new_event
from riverbed_webhooks import SOURCE, metrics
from riverbed_webhooks.domain.matching import plan_tasks
from riverbed_webhooks.service_layer.ports import EndpointCache


def webhook_event(event: CloudEvent) -> WebhookEvent:
    """What the subscriber receives: the event's id, type, time and data."""
    return WebhookEvent(id=event.id, type=event.type, time=event.time, data=event.data)


async def fan_out(event: CloudEvent, cache: EndpointCache) -> list[CloudEvent]:
    """The delivery tasks of ``event``: one per enabled endpoint whose filters match its type."""
    endpoint_ids = await cache.endpoint_ids_for(event.type)
    if not endpoint_ids:
        return []
    body = webhook_event(event)
    tasks = [
        new_event(
            DeliverWebhook(delivery_id=t.delivery_id, endpoint_id=t.endpoint_id, event=body),
            cause=event,
            id=t.task_id,
            source=SOURCE,
            subject=t.endpoint_id,
        )
        for t in plan_tasks(event.id, endpoint_ids)
    ]
    metrics.TASKS_CREATED.labels("fanout").inc(len(tasks))
    return tasks
