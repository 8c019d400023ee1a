"""An email service process for the crash test: the real service, configured by environment.

Everything comes from ``EMAIL_*``, ``RIVERBED_CONSUMER_*`` and ``REDIS_URL`` as in
production. One test-only hook: with ``WORKER_PAUSE_FILE`` set, the handler, once it
has returned (the relay accepted the mail and the send is recorded), writes the event id
to that file and waits forever — before the runtime publishes ``email.sent`` and
acknowledges. The test kills the process there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from riverbed.consumer import Message
from riverbed_contracts import CloudEvent
from riverbed_email.bootstrap import create_service
from riverbed_email.settings import EmailSettings


def main() -> None:
    service = create_service(EmailSettings())
    pause_file = os.environ.get("WORKER_PAUSE_FILE")
    if pause_file:
        [subscription] = service.subscriptions
        handler = subscription.handler

        async def send_then_pause(message: Message[Any]) -> Sequence[CloudEvent] | None:
            events = await handler(message)
            await asyncio.to_thread(Path(pause_file).write_text, message.event.id)
            await asyncio.Event().wait()  # until SIGKILL
            return events

        service.subscriptions[0] = dataclasses.replace(subscription, handler=send_then_pause)
    service.run()


if __name__ == "__main__":
    main()
