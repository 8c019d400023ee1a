"""The consumers' handlers: each decodes a message and calls one use case.

- the fan-out handler, on every source stream: an event in, its delivery tasks returned
  (the runtime appends them before acknowledging the source entry; their ids derive from
  (event, endpoint), so a repeat is dropped);
- the delivery handler, on the delivery stream: one task, one attempt; nothing returned,
  since the outcome's events are queued in the outbox with the outcome's record.
"""

from __future__ import annotations

from typing import Any

from riverbed.consumer import Handler, Message
from riverbed.errors import PermanentError
from riverbed_contracts import CloudEvent, DeliverWebhook
from riverbed_webhooks.service_layer.delivery import Deliverer
from riverbed_webhooks.service_layer.fanout import fan_out
from riverbed_webhooks.service_layer.ports import EndpointCache


def fan_out_handler(cache: EndpointCache) -> Handler:
    """The handler of the source streams: the delivery tasks of each event."""

    async def handle_event(message: Message[Any]) -> list[CloudEvent]:
        return await fan_out(message.event, cache)

    return handle_event


def delivery_handler(deliverer: Deliverer) -> Handler:
    """The handler of the delivery stream: one attempt of each task."""

    async def handle_task(message: Message[Any]) -> None:
        if not isinstance(message.payload, DeliverWebhook):
            raise PermanentError(f"not a delivery task: {message.event.type}")
        await deliverer.deliver(message.payload, task_id=message.event.id, cause=message.event)

    return handle_task
