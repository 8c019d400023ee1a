"""Backpressure: refuse new events (503) for a stream whose consumers are falling behind.

What counts is what is not handled yet, not what is stored: per consumer group, its lag
(entries not delivered to it) plus its pending entries (delivered, not acknowledged); the
most-behind group's figure, plus the items of the stream's delay store that are due but not
promoted yet (retries and delayed events whose time has come). Acknowledged entries that
retention has not trimmed yet do not count, nor does anything waiting in the delay store for
a later time (a retry parked for an hour, an event for next week). A stream no group reads
counts only its due items: its entries wait for no consumer (retention trims them by age).

A stream is over its ceiling when that sum passes ``max_unhandled_events``. Figures are
sampled in the background at most once per ``refresh_s``, so a request never waits for the
sampling; the first requests after start-up see no limit.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog

from riverbed import keys
from riverbed.connection import Redis
from riverbed.delay import DelayStore
from riverbed.problems import Problem
from riverbed_gateway import metrics
from riverbed_gateway.settings import GatewaySettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Unhandled:
    """What one stream has not handled yet, in events."""

    total: int  # behind + due: what the ceiling applies to
    behind: int  # the most-behind group's lag + pending (0 when no group reads the stream)
    group: str | None  # that group; None when no group reads the stream
    due: int  # due items of the delay store not promoted yet

    def explain(self) -> str:
        behind = (
            f"group {self.group!r} has {self.behind} undelivered or pending; "
            if self.group is not None
            else ""
        )
        return f"{self.total} events not handled yet ({behind}{self.due} due in the delay store)"


class Backpressure:
    """The backpressure probe: samples target streams in the background, refuses at once."""

    def __init__(self, redis: Redis, settings: GatewaySettings) -> None:
        self._redis = redis
        self.ceiling = settings.max_unhandled_events
        self.refresh_s = settings.backpressure_refresh_s
        self.retry_after_s = settings.retry_after_s
        self._over: dict[str, str] = {}  # stream -> why it refuses
        self._sampled_at: dict[str, float] = {}
        self._sampling: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        metrics.BACKPRESSURE_CEILING.labels("unhandled_events").set(self.ceiling)

    def check(self, streams: set[str]) -> None:
        """Raise 503 when a target stream is over the ceiling; schedule fresh samples."""
        now = time.monotonic()
        for stream in streams:
            if now - self._sampled_at.get(stream, 0.0) >= self.refresh_s:
                self._schedule(stream, now)
        for stream in streams:
            why = self._over.get(stream)
            if why:
                raise Problem(
                    503,
                    "backpressure",
                    "Consumers are behind",
                    f"stream {stream!r} is not accepting events for now: {why}",
                    headers={"Retry-After": str(self.retry_after_s)},
                )

    def _schedule(self, stream: str, now: float) -> None:
        if stream in self._sampling:
            return
        self._sampling.add(stream)
        self._sampled_at[stream] = now
        task = asyncio.create_task(self._sample(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def sample_now(self, stream: str) -> None:
        """Sample one stream at once (tests, and the first request after a long pause)."""
        self._sampling.add(stream)
        await self._sample(stream)

    async def _sample(self, stream: str) -> None:
        try:
            unhandled = await self.unhandled(stream)
            metrics.BACKPRESSURE_UNHANDLED.labels(stream).set(unhandled.total)
            self._over[stream] = (
                f"{unhandled.explain()}, ceiling {self.ceiling}"
                if unhandled.total > self.ceiling
                else ""
            )
        except Exception as error:
            log.warning("backpressure sampling failed", stream=stream, error=str(error))
        finally:
            self._sampling.discard(stream)
            self._sampled_at[stream] = time.monotonic()
        metrics.BACKPRESSURE_ACTIVE.labels(stream).set(1 if self._over.get(stream) else 0)

    async def unhandled(self, stream: str) -> Unhandled:
        """What ``stream`` has not handled yet (three round trips; sampling only)."""
        redis = self._redis
        key = keys.stream_key(stream)
        length = int(await redis.xlen(key))
        behind, behind_group = 0, None
        if length:
            for group in await redis.xinfo_groups(key):
                lag = group.get("lag")
                # Redis cannot tell the lag after entries were deleted from the middle of the
                # stream: the length bounds it from above
                undelivered = length if lag is None else int(lag)
                figure = undelivered + int(group["pending"])
                if behind_group is None or figure > behind:
                    behind, behind_group = figure, _text(group["name"])
        _, due, _ = await DelayStore(redis, stream).waiting()
        return Unhandled(behind + due, behind, behind_group, due)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
