"""A payments service process for the crash test: the real service, configured by environment.

Everything comes from ``PAYMENTS_*``, ``RIVERBED_CONSUMER_*`` and ``REDIS_URL`` as in
production. One test-only hook: with ``WORKER_PAUSE_FILE`` set, each handler, once it
has returned (the ledger transaction is committed), writes the event id to that file
and waits forever — before the runtime acknowledges the entry. The test kills the
process there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from riverbed.consumer import Handler, Message
from riverbed.lifespan import Lifespan, Resources
from riverbed_payments.bootstrap import Container, create_service
from riverbed_payments.settings import PaymentsSettings


def pause_after(handler: Handler, pause_file: Path) -> Handler:
    async def handle_then_pause(message: Message[Any]) -> Any:
        events = await handler(message)
        await asyncio.to_thread(pause_file.write_text, message.event.id)
        await asyncio.Event().wait()  # until SIGKILL
        return events

    return handle_then_pause


def pausing(
    lifespan: Lifespan[PaymentsSettings, Container], pause_file: Path
) -> Lifespan[PaymentsSettings, Container]:
    """``lifespan``, its container's payment handler pausing after each event."""

    @asynccontextmanager
    async def paused(settings: PaymentsSettings, resources: Resources) -> AsyncIterator[Container]:
        async with lifespan(settings, resources) as container:
            handler = pause_after(container.payment_events, pause_file)
            yield dataclasses.replace(container, payment_events=handler)

    return paused


def main() -> None:
    service = create_service(PaymentsSettings())
    pause_file = os.environ.get("WORKER_PAUSE_FILE")
    if pause_file:
        service.lifespan = pausing(service.lifespan, Path(pause_file))
    service.run()


if __name__ == "__main__":
    main()
