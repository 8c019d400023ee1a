"""Samples what Redis knows about our streams into gauges, and trims what all groups acked.

Sampled on demand (every ``/metrics`` scrape, at most once per ``min_interval``),
since Prometheus decides the pace. A group's lag, pending entries and oldest pending
entry are read as the operator CLI reads them (:mod:`riverbed.consumer_groups`); a lag
Redis cannot tell and that is too costly to count is left without a sample — never
exported as 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any

import structlog
from redis.asyncio.cluster import RedisCluster

from riverbed import keys, metrics
from riverbed.connection import Redis
from riverbed.consumer_groups import LAG_COUNT_LIMIT, oldest_pending_id, read_group
from riverbed.delay import DelayStore, now_ms
from riverbed.entry_ids import as_text, id_order, next_id
from riverbed.settings import RetentionSettings

log = structlog.get_logger(__name__)

#: one approximate XTRIM removes at most 100 macro nodes (10,000 entries with the default
#: node size); a retention pass repeats it, up to this many times (10 million entries)
TRIM_ROUNDS = 1_000


class StreamMonitor:
    def __init__(
        self,
        redis: Redis,
        streams: Iterable[str],
        *,
        min_interval: float = 1.0,
        lag_count_limit: int = LAG_COUNT_LIMIT,
    ) -> None:
        self.redis = redis
        self.lag_count_limit = lag_count_limit
        self.streams = sorted(set(streams))
        self.min_interval = min_interval  # s between two samplings
        self._last = 0.0
        self._lock = asyncio.Lock()

    async def refresh(self, *, force: bool = False) -> None:
        async with self._lock:
            if not force and time.monotonic() - self._last < self.min_interval:
                return
            await self._sample_redis()
            for stream in self.streams:
                await self._sample_stream(stream)
            self._last = time.monotonic()

    async def _sample_redis(self) -> None:
        if isinstance(self.redis, RedisCluster):
            by_node = await self.redis.info("memory", target_nodes=RedisCluster.PRIMARIES)
            used, limit = fullest_node(list(by_node.values()))
        else:
            used, limit = fullest_node([await self.redis.info("memory")])
        metrics.REDIS_USED_MEMORY.set(used)
        metrics.REDIS_MAX_MEMORY.set(limit)

    async def _sample_stream(self, stream: str) -> None:
        key = keys.stream_key(stream)
        store, current_ms = DelayStore(self.redis, stream), now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:  # one round trip a stream
            pipe.xlen(key)
            pipe.xlen(keys.dead_letter_key(stream))
            store.queue_waiting(pipe, current_ms)
            replies = await pipe.execute()
        length, dead = replies[0], replies[1]
        metrics.STREAM_LENGTH.labels(stream).set(length)
        metrics.DEAD_LETTER_DEPTH.labels(stream).set(dead)
        waiting, due, oldest_due_ms = store.read_waiting(replies, current_ms)
        metrics.DELAYED_WAITING.labels(stream).set(waiting)
        metrics.DELAYED_DUE.labels(stream).set(due)
        lag_s = 0.0 if oldest_due_ms is None else max(time.time() - oldest_due_ms / 1000, 0.0)
        metrics.PROMOTION_LAG.labels(stream).set(lag_s)
        if not length and not await self.redis.exists(key):
            return
        for group in await self.redis.xinfo_groups(key):
            await self._sample_group(stream, key, group)

    async def _sample_group(self, stream: str, key: str, group: dict[Any, Any]) -> None:
        state = await read_group(self.redis, key, group, lag_count_limit=self.lag_count_limit)
        if state.lag is None:
            with contextlib.suppress(KeyError):  # no sample at all: "unknown", not 0
                metrics.GROUP_LAG.remove(stream, state.name)
        else:
            metrics.GROUP_LAG.labels(stream, state.name).set(state.lag)
        metrics.GROUP_PENDING.labels(stream, state.name).set(state.pending)
        age = state.oldest_pending_age_s  # a gauge: nothing pending is age 0
        metrics.OLDEST_PENDING_AGE.labels(stream, state.name).set(age or 0.0)

    async def trim_acknowledged(self, stream: str) -> int:
        """Trim entries every group has acknowledged (approximate MINID); returns entries removed.

        The safe point is the oldest of, per group: its oldest pending entry and
        the first entry it has not been delivered. A stream with no group is not
        trimmed: nobody has read it yet.
        """
        key = keys.stream_key(stream)
        groups = await self.redis.xinfo_groups(key)
        if not groups:
            return 0
        safe: list[str] = []
        for group in groups:
            safe.append(next_id(as_text(group["last-delivered-id"])))
            if group["pending"]:
                oldest = await oldest_pending_id(self.redis, key, as_text(group["name"]))
                if oldest:
                    safe.append(oldest)
        minid = min(safe, key=id_order)
        removed = await self._trim_to(key, minid)
        if removed:
            metrics.RETENTION_TRIMMED.labels(stream).inc(removed)
            log.info("trimmed acknowledged entries", stream=stream, removed=removed, minid=minid)
        return removed

    async def _trim_to(self, key: str, minid: str) -> int:
        """``XTRIM MINID ~`` until it trims nothing: one call stops after 100 macro nodes, so
        a busy stream (over ~160 entries/s at one pass a minute) would outgrow a single one."""
        removed = 0
        for _ in range(TRIM_ROUNDS):
            trimmed = int(await self.redis.xtrim(key, minid=minid, approximate=True) or 0)
            removed += trimmed
            if not trimmed:
                break
        return removed

    async def trim_by_age(self, key: str, max_age_ms: int, *, label: str) -> int:
        """Trim entries older than ``max_age_ms`` (by their id's time; approximate MINID)."""
        oldest_kept_ms = int(time.time() * 1000) - max_age_ms
        removed = await self._trim_to(key, f"{oldest_kept_ms}-0")
        if removed:
            metrics.RETENTION_TRIMMED.labels(label).inc(removed)
            log.info("trimmed entries past their retention", key=key, removed=removed)
        return removed

    async def apply_retention(self, stream: str, retention: RetentionSettings) -> int:
        """Trim one stream and its dead-letter stream; returns entries removed.

        A stream some group reads keeps what a group has not acknowledged
        (:meth:`trim_acknowledged`); a stream no group reads keeps its entries
        ``retention.unconsumed_ms(stream)``; dead letters are kept ``dead_letter_ms``.
        """
        key = keys.stream_key(stream)
        removed = 0
        if await self.redis.exists(key):
            if await self.redis.xinfo_groups(key):
                removed += await self.trim_acknowledged(stream)
            else:
                removed += await self.trim_by_age(
                    key, retention.unconsumed_ms(stream), label=stream
                )
        removed += await self.trim_by_age(
            keys.dead_letter_key(stream), retention.dead_letter_ms, label=f"{stream}:dlq"
        )
        return removed


def fullest_node(infos: list[dict[str, Any]]) -> tuple[int, int]:
    """(used_memory, maxmemory) in bytes of the node closest to its limit.

    On a Redis Cluster each primary has its own ``maxmemory`` and the fullest one refuses
    writes (or evicts) first, so that is the node to watch; a node without a limit (0)
    ranks by its use alone.
    """

    def figures(info: dict[str, Any]) -> tuple[int, int]:
        return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))

    def fill(info: dict[str, Any]) -> tuple[float, int]:
        used, limit = figures(info)
        return (used / limit if limit else 0.0), used

    return figures(max(infos, key=fill)) if infos else (0, 0)
