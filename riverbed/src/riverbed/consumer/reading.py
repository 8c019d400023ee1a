"""Reading: new entries (``XREADGROUP``), claimed ones, and this consumer's own pending
entries after a restart, each started as a handler task within the concurrency bound.

Also the in-hand bookkeeping at the door: another group's retry is only acknowledged, an
event this group already handled is skipped, and a second entry of an event being
handled here right now is set aside until the first concludes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import structlog

from riverbed import metrics, scripts
from riverbed.consumer.handling import HandlesEntries
from riverbed.consumer.types import (
    DUPLICATE_IN_HAND_WAIT_MS,
    NOT_OURS,
    REDIS_DOWN,
    Decoded,
    Outcome,
)
from riverbed.delay import ATTEMPT_FIELD, FIRST_SEEN_FIELD, GROUP_FIELD
from riverbed.entry_ids import as_text, id_ms, id_order
from riverbed_contracts import CloudEvent, EntryDecodeError, event_from_entry

# the package's name, not this module's: log lines keep the logger they always had
log = structlog.get_logger(__package__)

_GROUP_FIELD = GROUP_FIELD.encode()
_ATTEMPT_FIELD = ATTEMPT_FIELD.encode()
_FIRST_SEEN_FIELD = FIRST_SEEN_FIELD.encode()


def carried_routing(fields: dict[bytes, bytes], entry_id: str) -> tuple[bytes | None, int, int]:
    """(target group or None, attempt carried, first seen ms) of an entry: a promoted retry
    carries all three; a first publication none (attempt 1, first seen = the entry's time)."""
    target = fields.get(_GROUP_FIELD)
    attempt = fields.get(_ATTEMPT_FIELD)
    first_seen = fields.get(_FIRST_SEEN_FIELD)
    try:
        return (
            target,
            int(attempt) if attempt is not None else 1,
            int(first_seen) if first_seen is not None else id_ms(entry_id),
        )
    except ValueError:  # a hand-written entry with a bad number: count from here
        return target, 1, id_ms(entry_id)


class ReadsEntries(HandlesEntries):
    """Reads and claims entries and starts a handler for each one not already in hand."""

    async def _read_loop(self) -> None:
        streams: dict[Any, Any] = {self.stream_key: ">"}
        while not self._stopping.is_set():
            free = self.settings.concurrency - len(self._in_flight)
            # reading for a few free slots makes many small round trips: wait for half a batch
            if free < min(self.settings.batch_size, self.settings.concurrency) // 2 or free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            count = min(self.settings.batch_size, free)
            read = asyncio.ensure_future(
                self._guarded(
                    "read",
                    lambda count=count: self.redis.xreadgroup(  # type: ignore[misc]
                        self.group, self.name, streams, count=count, block=self.settings.block_ms
                    ),
                )
            )
            stop = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not read.done():
                # entries Redis handed us in this cancelled read stay in our pending
                # list and are re-read after a restart or reclaimed by a sibling
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await read
                return
            reply = read.result()
            if reply:
                await self._dispatch_batch(reply[0][1], deliveries=None)

    async def _recover_own_pending(self) -> None:
        """Page through our own pending list once, in id order, before reading new entries."""
        start = "-"
        while not self._stopping.is_set():
            seen = await self._claim_entries("own", min_idle_ms=0, start=start)
            if not seen:
                return
            start = "(" + max(seen, key=id_order)
            if len(self._in_flight) >= self.settings.concurrency:
                self._slot_free.clear()
                await self._slot_free.wait()

    async def _claim_entries(self, mode: str, *, min_idle_ms: int, start: str = "-") -> list[str]:
        """Claim entries by ``mode`` (see scripts.CLAIM) and dispatch them; returns their ids."""
        count = max(
            min(self.settings.batch_size, self.settings.concurrency - len(self._in_flight)), 0
        )
        if count == 0:
            return []
        reply = await self._guarded(
            f"claim-{mode}",
            lambda: scripts.CLAIM(
                self.redis,
                keys=[self.stream_key, self.legacy_schedule_key, self.heartbeats_key],
                args=[
                    mode,
                    self.group,
                    self.name,
                    min_idle_ms,
                    count,
                    start,
                    self.settings.heartbeat_timeout_ms,
                ],
            ),
        )
        if not reply:
            return []
        claimed, flat_counts, deleted = reply
        if deleted:
            metrics.DELETED_WHILE_PENDING.labels(self.stream, self.group).inc(len(deleted))
            log.warning(
                "pending entries were trimmed before they were handled",
                stream=self.stream,
                count=len(deleted),
                entry_ids=[as_text(i) for i in deleted[:10]],
            )
        seen = [as_text(i) for i in deleted] + [as_text(entry[0]) for entry in claimed]
        if not claimed:
            return seen
        deliveries = {
            as_text(flat_counts[i]): int(flat_counts[i + 1]) for i in range(0, len(flat_counts), 2)
        }
        if mode == "stale":
            metrics.RECLAIMED.labels(self.stream, self.group).inc(len(claimed))
            log.info("reclaimed idle entries", stream=self.stream, count=len(claimed))
        elif mode == "dead":
            metrics.TAKEN_OVER.labels(self.stream, self.group).inc(len(claimed))
            log.info(
                "took over the entries of a consumer whose heartbeat stopped",
                stream=self.stream,
                count=len(claimed),
            )
        await self._dispatch_batch(claimed, deliveries=deliveries)
        return seen

    async def _dispatch_batch(
        self, entries: list[Any], *, deliveries: dict[str, int] | None
    ) -> None:
        """Start handling each entry not already in hand; deliveries=None means first delivery."""
        decoded = self._decode_batch(entries, deliveries)
        already_done: set[str] = set()
        if self.subscription.idempotent:
            already_done = await self._already_handled(
                [d[4].id for d in decoded if isinstance(d[4], CloudEvent)]
            )
        to_handle: list[Decoded] = []
        for entry in decoded:
            entry_id, fields, attempt, first_seen, parsed = entry
            if entry_id in self._in_flight:
                continue  # claimed back while still running here: it is already in hand
            if isinstance(parsed, CloudEvent) and parsed.id in already_done:
                metrics.DUPLICATES_SKIPPED.labels(self.stream, self.group).inc()
                self._record(Outcome(entry_id, parsed.type, parsed.id, "ack", attempt=attempt))
                continue
            if self.subscription.idempotent and isinstance(parsed, CloudEvent):
                if parsed.id in self._events_in_hand:
                    self._set_aside_duplicate(entry_id, fields, attempt, first_seen, parsed)
                    continue
                self._events_in_hand[parsed.id] = entry_id
            to_handle.append(entry)
        if to_handle:
            self._start_handlers(to_handle)

    def _decode_batch(self, entries: list[Any], deliveries: dict[str, int] | None) -> list[Decoded]:
        """Each entry with its attempt and event; another group's retry is acknowledged here
        and left out (it is not ours to handle)."""
        decoded: list[Decoded] = []
        for raw_id, raw_fields in entries:
            entry_id = as_text(raw_id)
            # XREADGROUP replies carry a dict; a script's XCLAIM reply a flat list
            fields = (
                raw_fields
                if isinstance(raw_fields, dict)
                else dict(zip(raw_fields[::2], raw_fields[1::2], strict=True))
            )
            target, carried, first_seen = carried_routing(fields, entry_id)
            if target is not None and target != self._group_bytes:
                # another group's retry: not ours to handle, only to acknowledge
                self._record(Outcome(entry_id, NOT_OURS, None, "ack", counted=False))
                continue
            redelivered = 0 if deliveries is None else deliveries.get(entry_id, 1) - 1
            attempt = carried + redelivered
            parsed: CloudEvent | Exception
            try:
                parsed = event_from_entry(fields)
            except EntryDecodeError as error:
                parsed = error
            decoded.append((entry_id, fields, attempt, first_seen, parsed))
        return decoded

    def _set_aside_duplicate(
        self,
        entry_id: str,
        fields: dict[bytes, bytes],
        attempt: int,
        first_seen: int,
        event: CloudEvent,
    ) -> None:
        """A second entry of an event being handled here right now (a producer killed after
        appending re-appends it): wait for the first to conclude, then the idempotency
        record skips it; never both at once. Not counted as a delivery."""
        self._record(
            Outcome(
                entry_id,
                event.type,
                event.id,
                "retry",
                delay_ms=DUPLICATE_IN_HAND_WAIT_MS,
                raw=fields,
                attempt=attempt,
                reason="duplicate-in-hand",
                counted=False,
                first_seen_ms=first_seen,
            )
        )

    async def _already_handled(self, event_ids: list[str]) -> set[str]:
        """Event ids this group handled within the idempotency window (one script call)."""
        if not event_ids:
            return set()
        oldest_ms = int(time.time() * 1000) - self.settings.idempotency_ttl_s * 1000
        try:
            flags = await scripts.HANDLED(
                self.redis, keys=[self.done_key], args=[oldest_ms, json.dumps(event_ids)]
            )
        except REDIS_DOWN:
            return set()  # handling again is safe: effects are idempotent downstream
        return {event_id for event_id, flag in zip(event_ids, flags, strict=True) if flag}
