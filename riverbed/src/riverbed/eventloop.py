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
