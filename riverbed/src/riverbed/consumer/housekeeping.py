"""The consumer's background loops besides reading and flushing: heartbeats and taking over
a dead sibling's entries, keep-alive of entries in hand, reclaiming idle entries,
promoting due retries, cancelling handlers past their timeout, and removing idle
consumers from the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from redis.exceptions import ResponseError

from riverbed import eventloop, metrics, scripts
from riverbed.consumer.reading import ReadsEntries
from riverbed.consumer.types import REDIS_DOWN
from riverbed.entry_ids import as_text

# the package's name, not this module's: log lines keep the logger they always had
log = structlog.get_logger(__package__)


class KeepsHouse(ReadsEntries):
    """Keeps this consumer known to be alive, and the group's entries moving."""

    async def _keepalive_loop(self) -> None:
        interval = self.settings.keepalive_interval_ms / 1000
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=interval)
                return
            held = list(self._in_flight)
            if not held:
                continue
            lost = await self._guarded(
                "keepalive",
                lambda held=held: scripts.KEEPALIVE(  # type: ignore[misc]
                    self.redis, keys=[self.stream_key], args=[self.group, self.name, *held]
                ),
            )
            if lost:
                still_running = [i for i in map(as_text, lost) if i in self._in_flight]
                if still_running:
                    log.warning(
                        "entries in hand were claimed by a sibling or removed",
                        count=len(still_running),
                        stream=self.stream,
                    )

    async def _beat(self) -> None:
        await scripts.HEARTBEAT(self.redis, keys=[self.heartbeats_key], args=[self.name])

    def _in_touch_for(self, seconds: float) -> bool:
        """Has this consumer reached Redis without a break for ``seconds``? Only then may it
        judge siblings by their heartbeats or idle times: after an outage every sibling looks
        silent, though the live ones beat and refresh their entries again within one interval."""
        return (
            self._in_touch_since is not None and time.monotonic() - self._in_touch_since >= seconds
        )

    async def _heartbeat_loop(self) -> None:
        """Beat every interval; then take over what consumers that stopped beating hold."""
        interval = self.settings.heartbeat_interval_ms / 1000
        while not self._stopping.is_set():
            await self._pause(interval)
            if self._stopping.is_set():
                break
            beat = await self._guarded("heartbeat", self._beat_and_note)
            if beat is None:
                self._in_touch_since = None  # Redis away: judge nobody until back a while
                continue
            if self._in_touch_for(self.settings.heartbeat_timeout_ms / 1000):
                while await self._claim_entries("dead", min_idle_ms=0):
                    pass
        await self._closing.wait()
        if not self._cut_off:  # nothing of ours is left pending: we are simply gone
            with contextlib.suppress(*REDIS_DOWN, ResponseError):
                await self.redis.hdel(self.heartbeats_key, self.name)

    async def _beat_and_note(self) -> bool:
        await self._beat()
        if self._in_touch_since is None:
            self._in_touch_since = time.monotonic()
        return True

    async def _reclaim_loop(self) -> None:
        interval = self.settings.reclaim_interval_ms / 1000
        next_housekeeping = time.monotonic()
        # a sibling's keep-alive refreshes what it holds every keepalive interval: after an
        # outage, wait that long (and a heartbeat timeout) in touch before calling it idle
        settle_s = max(self.settings.keepalive_interval_ms, self.settings.heartbeat_timeout_ms)
        while True:
            await self._pause(interval)
            if self._stopping.is_set():
                return
            if not self._in_touch_for(settle_s / 1000):
                continue
            while await self._claim_entries(
                "stale", min_idle_ms=self.settings.visibility_timeout_ms
            ):
                eventloop.raise_if_cancelled()
            eventloop.raise_if_cancelled()
            if time.monotonic() >= next_housekeeping:
                await self._guarded("remove-idle-consumers", self._remove_idle_consumers)
                # a replica of an older version may still schedule retries the old way
                await self._guarded("carry-over", self._carry_over_legacy)
                # s: often enough to honour the idle limit, rarely enough to be free
                next_housekeeping = time.monotonic() + min(
                    60.0, self.settings.consumer_idle_remove_ms / 2000
                )

    async def _promote_loop(self) -> None:
        """Move due items of the stream's delay store onto the stream, batch after batch, then
        sleep until the next falls due (at most ``promote_interval_ms``; a local park wakes it).

        Every consumer of the stream runs one: promotion is atomic per batch, so replicas
        (and other groups' consumers) running side by side never promote an item twice.
        """
        longest_s = self.settings.promote_interval_ms / 1000
        while not self._stopping.is_set():
            self._promote_soon.clear()
            promotion = await self._guarded(
                "promote", lambda: self.delay.promote_due(batch=self.settings.promote_batch)
            )
            if promotion is not None and promotion.promoted >= self.settings.promote_batch:
                continue  # more may be due: no sleep between full batches
            wait_s = longest_s
            if promotion is not None and promotion.next_due_ms is not None:
                wait_s = min(max((promotion.next_due_ms - time.time() * 1000) / 1000, 0.0), wait_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._promote_soon.wait(), timeout=wait_s)

    async def _carry_over_legacy(self) -> None:
        moved = await self.delay.carry_over_legacy(self.group)
        if moved:
            log.info(
                "carried retries of the old schedule over to the delay store",
                stream=self.stream,
                group=self.group,
                count=moved,
            )

    async def _remove_idle_consumers(self) -> None:
        for consumer in await self.redis.xinfo_consumers(self.stream_key, self.group):
            name = as_text(consumer["name"])
            if (
                name != self.name
                and consumer["pending"] == 0
                and consumer["idle"] > self.settings.consumer_idle_remove_ms
            ):
                await self.redis.xgroup_delconsumer(self.stream_key, self.group, name)
                metrics.CONSUMERS_REMOVED.labels(self.stream, self.group).inc()
                log.info("removed idle consumer", consumer=name, idle_ms=consumer["idle"])

    async def _timeout_loop(self) -> None:
        """Cancel handlers running past their timeout, checking a few times per timeout (at
        least every second); :meth:`_run_handler` counts such a cancel as a failed delivery."""
        interval = min(1.0, self.handler_timeout_s / 4)
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=interval)
                return
            overdue = time.perf_counter() - self.handler_timeout_s
            for entry_id, started in list(self._handler_started.items()):
                task = self._in_flight.get(entry_id)
                if started <= overdue and task is not None and entry_id not in self._timed_out:
                    self._timed_out.add(entry_id)
                    task.cancel()
