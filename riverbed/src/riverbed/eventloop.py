"""The event loop every Riverbed process runs on: uvloop where it is installed.

uvloop makes task scheduling and socket I/O cheaper (measured in bench/consume.py);
the standard loop is the fallback, e.g. on Windows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` when the current task was asked to stop.

    redis-py's asyncio client can swallow a cancellation that lands inside a command (the
    request stays counted on the task): a ``while True`` loop of Redis calls would then go
    on after ``task.cancel()``, and whoever awaits it hangs. Loops call this once a round.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
