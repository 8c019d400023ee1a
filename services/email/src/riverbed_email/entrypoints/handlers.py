"""The ``email.requested`` consumer handler: a runtime :class:`Message` in, the use case
called with what it needs, nothing returned for the runtime to publish (the use case
publishes every outcome itself, before the entry may be acknowledged)."""

from __future__ import annotations

from riverbed.consumer import Message
from riverbed_contracts import CloudEvent
from riverbed_contracts.email import SendEmail
from riverbed_email.domain.request import EmailRequest
from riverbed_email.service_layer.delivery import Delivery


class EmailRequestedHandler:
    """Hands each delivered ``email.requested.v1`` to :class:`Delivery`."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery

    async def __call__(self, message: Message[SendEmail]) -> list[CloudEvent]:
        request = EmailRequest(event=message.event, email=message.payload, attempt=message.attempt)
        await self.delivery.deliver(request)
        return []
