"""An email service process for the crash tests: the real service, configured by environment.

Everything comes from ``EMAIL_*``, ``RIVERBED_CONSUMER_*`` and ``REDIS_URL`` as in
production. One test-only hook: with ``WORKER_PAUSE_FILE`` set, the process writes the
request's event id to that file and waits forever (until the test's SIGKILL) at the point
``WORKER_PAUSE_AT`` names:

- ``returned`` (default): once the handler has returned — the relay accepted the mail,
  the send is recorded and ``email.sent`` is out — before the entry is acknowledged;
- ``publishing-sent``: as ``email.sent`` is about to be appended (inside the runtime's
  ``Publisher.publish_many``, whoever calls it) — after the sent marker, before the event.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from riverbed.consumer import Message
from riverbed.publisher import Publisher
from riverbed_contracts import CloudEvent
from riverbed_email.bootstrap import create_service
from riverbed_email.entrypoints.handlers import EmailRequestedHandler
from riverbed_email.settings import EmailSettings


async def pause_forever(pause_file: str, event_id: str) -> None:
    await asyncio.to_thread(Path(pause_file).write_text, event_id)
    await asyncio.Event().wait()  # until SIGKILL


def pause_when_handler_returned(pause_file: str) -> None:
    handle = EmailRequestedHandler.__call__

    async def send_then_pause(
        self: EmailRequestedHandler, message: Message[Any]
    ) -> list[CloudEvent]:
        events = await handle(self, message)
        await pause_forever(pause_file, message.event.id)
        return events

    EmailRequestedHandler.__call__ = send_then_pause  # type: ignore[method-assign]


def pause_when_publishing_sent(pause_file: str) -> None:
    publish_many = Publisher.publish_many

    async def publish_or_pause(
        self: Publisher, events: Sequence[CloudEvent], **options: Any
    ) -> list[str]:
        for event in events:
            if event.type == "email.sent.v1":
                await pause_forever(pause_file, str(event.data["request_id"]))
        return await publish_many(self, events, **options)

    Publisher.publish_many = publish_or_pause  # type: ignore[method-assign]


def main() -> None:
    service = create_service(EmailSettings())
    pause_file = os.environ.get("WORKER_PAUSE_FILE")
    if pause_file:
        where = os.environ.get("WORKER_PAUSE_AT", "returned")
        if where == "returned":
            pause_when_handler_returned(pause_file)
        elif where == "publishing-sent":
            pause_when_publishing_sent(pause_file)
        else:
            raise SystemExit(f"unknown WORKER_PAUSE_AT {where!r}")
    service.run()


if __name__ == "__main__":
    main()
