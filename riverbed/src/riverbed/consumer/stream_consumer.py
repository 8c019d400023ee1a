"""The reliable consumer itself: starts the loops, reads until stopped, then drains."""

from __future__ import annotations

import asyncio

import structlog

from riverbed.consumer.housekeeping import KeepsHouse
from riverbed.consumer.outcomes import AppliesOutcomes

# the package's name, not this module's: log lines keep the logger they always had
log = structlog.get_logger(__package__)


class StreamConsumer(KeepsHouse, AppliesOutcomes):
    """Runs one :class:`~riverbed.consumer.Subscription` until :meth:`stop` is called."""

    async def run(self) -> None:
        """Consume until stopped; returns after the drain."""
        log.info("consumer starting", stream=self.stream, group=self.group, consumer=self.name)
        try:
            # Redis away at start-up: wait for it (a consumer that gave up here would leave
            # its service unready for good)
            while not self._stopping.is_set() and not await self._guarded(
                "create-group", self._ensure_group
            ):
                pass
            await self._guarded("carry-over", self._carry_over_legacy)
            await self._guarded("heartbeat", self._beat_and_note)
            self._tasks = [
                asyncio.create_task(self._heartbeat_loop(), name=f"heartbeat:{self.stream}"),
                asyncio.create_task(self._flush_loop(), name=f"flush:{self.stream}"),
                asyncio.create_task(self._keepalive_loop(), name=f"keepalive:{self.stream}"),
                asyncio.create_task(self._reclaim_loop(), name=f"reclaim:{self.stream}"),
                asyncio.create_task(self._promote_loop(), name=f"promote:{self.stream}"),
                asyncio.create_task(self._timeout_loop(), name=f"timeouts:{self.stream}"),
            ]
            await self._recover_own_pending()
            await self._read_loop()
        finally:
            await self._drain()
            log.info("consumer stopped", stream=self.stream, group=self.group, consumer=self.name)

    def start(self) -> asyncio.Task[None]:
        self._main = asyncio.create_task(self.run(), name=f"consumer:{self.stream}:{self.group}")
        return self._main

    async def join(self) -> None:
        """Wait until ``run()`` has returned (after :meth:`stop`, once drained)."""
        if self._main is not None:
            await asyncio.gather(self._main, return_exceptions=True)

    def stop(self) -> None:
        """Stop reading; ``run()`` then drains in-flight work and returns."""
        self._stopping.set()
        self._slot_free.set()
        self._promote_soon.set()

    @property
    def healthy(self) -> bool:
        return self._main is not None and not self._main.done() and not self._stopping.is_set()

    async def _drain(self) -> None:
        pending = list(self._in_flight.values())
        if pending:
            log.info("draining in-flight handlers", count=len(pending), stream=self.stream)
            _, unfinished = await asyncio.wait(pending, timeout=self.settings.shutdown_timeout_s)
            for task in unfinished:
                task.cancel()
            if unfinished:
                # their entries stay pending and are redelivered: nothing is lost; the
                # heartbeat is left to go stale, so a sibling takes them over in seconds
                log.warning("handlers cut off at shutdown", count=len(unfinished))
                await asyncio.gather(*unfinished, return_exceptions=True)
                self._cut_off = True
        # background loops end on their own once closing is set (the flush loop after
        # applying every outcome); cancelling is only the fallback for a stuck Redis call
        self._closing.set()
        self._outcome_ready.set()
        self._promote_soon.set()
        if not self._tasks:  # stopped before its loops started
            return
        _, stuck = await asyncio.wait(self._tasks, timeout=self.settings.shutdown_timeout_s)
        for task in stuck:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
