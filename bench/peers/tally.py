"""What every Python worker and producer of the peer benchmark shares (stdlib only: the
FastStream side imports it from its own virtualenv).

A worker counts completions in memory, never with a Redis call per message, and reports
on stdout, one JSON object a line: ``ready`` (connected, about to consume), ``warm`` (the
warm-up events are handled), ``done`` (every timed event is handled, with the wall-clock
times of its start, first and last completion). A producer reports one ``done`` line with
the wall-clock times of its first enqueue and of the last one's acknowledgement.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable


def report(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class Tally:
    """Counts handled messages; ``finished`` is set once ``warm + expect`` were handled."""

    def __init__(self, expect: int, warm: int) -> None:
        self.expect = expect
        self.warm = warm
        self.count = 0
        self.started = 0.0
        self.first = 0.0
        self.finished = asyncio.Event()

    def start(self) -> None:
        self.started = time.time()

    def add(self, handled: int = 1) -> None:
        before = self.count
        self.count += handled
        if before < self.warm <= self.count:
            report("warm", count=self.count)
        if not self.first and self.count > self.warm:
            self.first = time.time()
        if self.count >= self.warm + self.expect:
            self.finished.set()

    async def finish(self, nothing_pending: Callable[[], Awaitable[bool]]) -> None:
        """Wait for the last completion, then for its acknowledgement (a few ``XPENDING``
        calls at the end, none per message), and report ``done``."""
        await self.finished.wait()
        while not await nothing_pending():  # noqa: ASYNC110 - polls Redis, no local event
            await asyncio.sleep(0.0005)
        report("done", start=self.started, first=self.first, last=time.time(), count=self.count)


def read_payloads(path: str, first: int, count: int) -> list[str]:
    with open(path, encoding="utf-8") as lines:
        return lines.read().splitlines()[first : first + count]


def parse_args(argv: list[str]) -> tuple[str, list[str]]:
    if len(argv) < 2 or argv[1] not in {"worker", "producer"}:
        sys.exit(
            "usage: worker URL QUEUE SETTINGS EXPECT WARM | "
            "producer URL QUEUE SETTINGS EVENTS_FILE FIRST COUNT"
        )
    return argv[1], argv[2:]
