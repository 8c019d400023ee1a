"""A consumer process for fault tests: a real Service, configured by environment.

WORKER_STREAM, WORKER_GROUP: what to consume. WORKER_DELAY_MS: handler time.
WORKER_FAIL_FIRST=1: the handler fails every event's first attempt (a retry follows).
WORKER_EFFECTS: a Redis set key; each handled event id is added to it (an
idempotent effect), and WORKER_EFFECTS:calls counts handler runs per event id.
Consumer settings come from RIVERBED_CONSUMER_* and the Redis URL from REDIS_URL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from riverbed.consumer import Message
from riverbed.service import Service
from riverbed.settings import ServiceSettings


def _install_task_dump() -> None:
    """SIGUSR1 prints every asyncio task's stack: how a test shows where a worker hangs."""
    loop = asyncio.get_running_loop()

    def dump() -> None:
        for task in asyncio.all_tasks(loop):
            task.print_stack(file=sys.stdout)
        sys.stdout.flush()

    loop.add_signal_handler(signal.SIGUSR1, dump)


def main() -> None:
    stream = os.environ["WORKER_STREAM"]
    effects = os.environ["WORKER_EFFECTS"]
    delay_s = int(os.environ.get("WORKER_DELAY_MS", "0")) / 1000
    fail_first = os.environ.get("WORKER_FAIL_FIRST") == "1"
    settings = ServiceSettings(
        service_name="fault-worker",
        port=int(os.environ.get("WORKER_PORT", "0")),
        consumer_name=os.environ["WORKER_NAME"],
        log_format="json",
    )
    service = Service(settings)

    async def handle(message: Message[Any]) -> None:
        _install_task_dump()
        await service.redis.hincrby(f"{effects}:calls", message.event.id, 1)
        await asyncio.sleep(delay_s)
        if fail_first and message.attempt == 1:
            raise RuntimeError("first attempts fail")
        await service.redis.sadd(effects, message.event.id)

    service.subscribe(stream, handle, group=os.environ.get("WORKER_GROUP", "workers"))
    service.run()


if __name__ == "__main__":
    main()
