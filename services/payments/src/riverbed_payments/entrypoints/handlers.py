"""The stream handlers: a consumed message in, a use case called.

Every inbound payment stream has the same handler: the recorder decides what the event
means for the ledger, and raises the runtime's PermanentError or RetryLater where it must
be dead-lettered or tried again later.
"""

from __future__ import annotations

from typing import Any

from riverbed.consumer import Handler, Message
from riverbed_payments.service_layer.recording import Recorder


def payment_events(recorder: Recorder) -> Handler:
    """The handler of the payment streams: nothing is returned, the outbox carries what
    recording an event emits."""

    async def record(message: Message[Any]) -> None:
        await recorder.handle(
            message.event,
            message.payload,
            stream=message.stream,
            first_seen_ms=message.first_seen_ms,
        )

    return record
