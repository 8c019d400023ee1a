"""Backpressure: refuse new events (503) for a stream whose consumers are falling behind.

A stream is over its ceiling when its length or any group's lag passes the configured
limits. Sizes are sampled in the background at most once per ``refresh_s``, so a
request never waits for the sampling; the first requests after start-up see no limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from riverbed import keys
from riverbed.connection import Redis
from riverbed_gateway import metrics
from riverbed_gateway.problems import Problem
from riverbed_gateway.settings import GatewaySettings

log = structlog.get_logger(__name__)


class Backpressure:
    def __init__(self, redis: Callable[[], Redis], settings: GatewaySettings) -> None:
        self._redis = redis
        self.max_length = settings.max_stream_length
        self.max_lag = settings.max_group_lag
        self.refresh_s = settings.backpressure_refresh_s
        self.retry_after_s = settings.retry_after_s
        self._over: dict[str, str] = {}  # stream -> why it refuses
        self._sampled_at: dict[str, float] = {}
        self._sampling: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        metrics.BACKPRESSURE_CEILING.labels("stream_length").set(self.max_length)
        metrics.BACKPRESSURE_CEILING.labels("group_lag").set(self.max_lag)

    def check(self, streams: set[str]) -> None:
        """Raise 503 when a target stream is over a ceiling; schedule fresh samples."""
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
            self._over[stream] = await self._why_over(stream)
        except Exception as error:
            log.warning("backpressure sampling failed", stream=stream, error=str(error))
        finally:
            self._sampling.discard(stream)
            self._sampled_at[stream] = time.monotonic()
        metrics.BACKPRESSURE_ACTIVE.labels(stream).set(1 if self._over.get(stream) else 0)

    async def _why_over(self, stream: str) -> str:
        redis = self._redis()
        key = keys.stream_key(stream)
        length = int(await redis.xlen(key))
        if length > self.max_length:
            return f"{length} entries, ceiling {self.max_length}"
        if length == 0:
            return ""
        for group in await redis.xinfo_groups(key):
            lag = group.get("lag")
            if lag is not None and int(lag) > self.max_lag:
                name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
                return f"group {name!r} is {lag} entries behind, ceiling {self.max_lag}"
        return ""
