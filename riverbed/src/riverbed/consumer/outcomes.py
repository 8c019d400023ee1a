"""Applying outcomes to Redis: acknowledge successes (one script call per flush, recording
their event ids), park retries and deferrals in the delay store, dead-letter the rest.

An outcome leaves the queue only once applied, so Redis failing midway neither loses nor
repeats any of them; events a handler returned were published before its outcome was
recorded.
"""

from __future__ import annotations

import asyncio
import json
import time

import structlog

from riverbed import eventloop, metrics, scripts
from riverbed.consumer.base import ConsumerBase
from riverbed.consumer.types import MOST_PER_CALL, REDIS_DOWN, Outcome
from riverbed.delay import Parked
from riverbed.entry_ids import as_text

# the package's name, not this module's: log lines keep the logger they always had
log = structlog.get_logger(__package__)


class AppliesOutcomes(ConsumerBase):
    """Drains the outcome queue into Redis, batch by batch, one kind at a time."""

    async def _flush_loop(self) -> None:
        while True:
            await self._outcome_ready.wait()
            if self.settings.ack_flush_ms and not self._closing.is_set():
                await asyncio.sleep(self.settings.ack_flush_ms / 1000)  # let acks gather
            self._outcome_ready.clear()
            while self._flush_due():
                try:
                    await self._apply_outcomes()
                except REDIS_DOWN as error:
                    log.warning("could not apply outcomes; will retry", error=str(error))
                    await asyncio.sleep(1.0)  # s; outcomes are kept until applied
                eventloop.raise_if_cancelled()
            if self._closing.is_set():
                return

    async def _apply_outcomes(self) -> None:
        """Apply what handlers decided, one kind at a time; an outcome leaves the queue only
        once applied, so a Redis failure midway neither loses nor repeats any of them."""
        while self._ack_entry_ids and (not self._acks_ride_along or self._closing.is_set()):
            await self._acknowledge_waiting()
        while self._outcomes:
            batch = self._outcomes[:MOST_PER_CALL]
            retries = [o for o in batch if o.kind == "retry"]
            dead = [o for o in batch if o.kind == "dead"]
            if retries:
                await self._park(retries)
                self._forget(retries)
            for o in dead:
                await scripts.DEAD_LETTER(
                    self.redis,
                    keys=[self.stream_key, self.dead_letter_key],
                    args=[self.group, o.entry_id, *self._dead_letter_fields(o)],
                )
                self._forget([o])
                metrics.DEAD_LETTERED.labels(self.stream, self.group, o.event_type, o.reason).inc()

    async def _park(self, retries: list[Outcome]) -> None:
        """Move retries and deferrals to the delay store, acknowledging their entries."""
        now_ms = int(time.time() * 1000)
        parked = await self.delay.park(
            self.group,
            self.name,
            [
                Parked(
                    entry_id=o.entry_id,
                    event=o.raw.get(b"event", b""),
                    due_ms=now_ms + o.delay_ms,
                    # a deferral did not try: the next delivery keeps this attempt
                    next_attempt=o.attempt + 1 if o.counted else o.attempt,
                    first_seen_ms=o.first_seen_ms,
                    reason=o.reason,
                    error=f"{type(o.error).__name__}: {o.error}" if o.error else "",
                )
                for o in retries
            ],
        )
        for o in retries:
            if o.entry_id in parked:
                metrics.RETRIED.labels(self.stream, self.group, o.event_type).inc()
        if len(parked) < len(retries):
            log.warning(
                "entries claimed by a sibling before their retry was parked; it decides",
                count=len(retries) - len(parked),
                stream=self.stream,
            )
        self._promote_soon.set()  # the promoter looks again: a short retry may be due soon

    def _forget(self, applied: list[Outcome]) -> None:
        done = {id(o) for o in applied}
        self._outcomes = [o for o in self._outcomes if id(o) not in done]

    async def _acknowledge_waiting(self) -> None:
        """Acknowledge the oldest waiting successes (at most ``MOST_PER_CALL``), then drop
        them from the lists: handlers append while the call is on its way, never remove."""
        async with self._ack_lock:
            count = min(len(self._ack_entry_ids), MOST_PER_CALL)
            if not count:
                return  # the read loop took them while this waited for the lock
            if self.subscription.idempotent:
                await self._ack_check_read(acks=count)
            else:
                await self.redis.xack(self.stream_key, self.group, *self._ack_entry_ids[:count])
                self._drop_acknowledged(count)

    def _dead_letter_fields(self, outcome: Outcome) -> list[str | bytes | int]:
        error = outcome.error
        original: bytes | str = outcome.raw.get(b"event") or json.dumps(
            {as_text(k): v.decode(errors="replace") for k, v in outcome.raw.items()}
        )
        return [
            "event", original,
            "error_type", type(error).__name__ if error else "",
            "error_message", str(error)[:2000] if error else "",
            "reason", outcome.reason,
            "attempts", outcome.attempt,
            "original_id", outcome.entry_id,
            "stream", self.stream,
            "group", self.group,
            "service", self.service,
            "failed_at_ms", int(time.time() * 1000),
        ]  # fmt: skip
