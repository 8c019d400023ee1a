"""Deliveries of one request in this process run one after the other.

Two entries of one request can be in hand at once (the same event published twice, a
dead-letter replay next to a pending retry): the second then sees what the first decided
instead of sending alongside it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class OneAtATime:
    """A lock per request id, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # id -> (lock, its users)

    @contextlib.asynccontextmanager
    async def __call__(self, event_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(event_id, (asyncio.Lock(), 0))
        self._locks[event_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[event_id]
            if users == 1:
                del self._locks[event_id]
            else:
                self._locks[event_id] = (lock, users - 1)
