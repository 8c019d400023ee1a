"""Reading: new entries (``XREADGROUP``), claimed ones, and this consumer's own pending
entries after a restart, each started as a handler task within the concurrency bound.

Also the in-hand bookkeeping at the door: another group's retry is only acknowledged, an
event this group already handled is skipped, and a second entry of an event being
handled here right now is set aside until the first concludes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from riverbed import metrics, scripts
from riverbed.consumer.decoding import (
    EVENT_FIELD,
    carried_routing,
    decoded_event,
    event_id_of,
    plain_ids_json,
    sniffed_event_id,
)
from riverbed.consumer.handling import HandlesEntries
from riverbed.consumer.types import (
    DUPLICATE_IN_HAND_WAIT_MS,
    MOST_PER_CALL,
    NOT_OURS,
    REDIS_DOWN,
    Decoded,
    Outcome,
)
from riverbed.entry_ids import as_text, id_ms, id_order
from riverbed_contracts import CloudEvent

# the package's name, not this module's: log lines keep the logger they always had
log = structlog.get_logger(__package__)


class ReadsEntries(HandlesEntries):
    """Reads and claims entries and starts a handler for each one not already in hand."""

    async def _read_loop(self) -> None:
        """Read new entries until stopping. While entries keep coming, one round trip a
        batch checks the batch in hand against the idempotency set, reads the next one and
        takes the waiting acknowledgements along (:meth:`_ack_check_read`); only an empty
        stream is waited on, with a blocking ``XREADGROUP``."""
        unchecked: list[Decoded] = []  # read, not yet checked against the idempotency set
        try:
            while not self._stopping.is_set():
                self._ride_acks_along(bool(unchecked))
                # in hand at most one batch beyond the handlers that may run at once: a batch
                # read while the one before is handled keeps a call always on its way, and
                # siblings still get their share of a backlog when handlers are slow
                batch = min(self.settings.batch_size, self.settings.concurrency)
                free = self.settings.concurrency + batch - len(self._in_flight) - len(unchecked)
                # reading for a few free slots makes many small round trips: wait for half
                wanted = min(batch, free) if free >= batch // 2 else 0
                if unchecked:
                    unchecked = await self._check_and_read(unchecked, wanted)
                elif wanted <= 0:
                    self._slot_free.clear()
                    await self._slot_free.wait()
                else:
                    read = await self._blocking_read(wanted)
                    if read is None:
                        return  # stopping
                    if self.subscription.idempotent:
                        unchecked = read
                    else:
                        self._admit(read, already_done=set())
        finally:
            self._ride_acks_along(False)
            await self._close_read_connection()

    def _ride_acks_along(self, riding: bool) -> None:
        """Whether the read loop's next call takes the waiting acknowledgements along; when
        it stops doing so, the flush loop is woken for those waiting."""
        if self._acks_ride_along and not riding and self._ack_entry_ids:
            self._outcome_ready.set()
        self._acks_ride_along = riding

    async def _blocking_read(self, count: int) -> list[Decoded] | None:
        """Wait for new entries (``XREADGROUP ... BLOCK``); None once stopping."""
        read = asyncio.ensure_future(
            self._guarded(
                "read",
                lambda: self.redis.xreadgroup(
                    self.group,
                    self.name,
                    self._new_entries,
                    count=count,
                    block=self.settings.block_ms,
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
            return None
        reply = read.result()
        return self._decode_batch(reply[0][1], None, sniff=True) if reply else []

    async def _check_and_read(self, unchecked: list[Decoded], count: int) -> list[Decoded]:
        """Check ``unchecked`` and start handling it, reading up to ``count`` new entries and
        acknowledging the successes waiting in the same call; returns what it read
        (unchecked). Redis failing leaves ``unchecked`` as it is, to be checked again:
        handling it unchecked could repeat a handled event."""
        parsed = [d[4] for d in unchecked]
        event_ids = [i for i in map(event_id_of, parsed) if i is not None]
        # ids sniffed off their documents need no escaping: their JSON without an encoder
        plain = len(event_ids) == len(parsed) and all(type(p) is str for p in parsed)
        check = plain_ids_json(event_ids) if plain else event_ids
        # the waiting acknowledgements go along unless the flush loop is sending them now
        take_acks = bool(self._ack_entry_ids) and not self._ack_lock.locked()
        async with self._ack_lock if take_acks else contextlib.nullcontext():
            acks = min(len(self._ack_entry_ids), MOST_PER_CALL) if take_acks else 0
            reply = await self._guarded(
                "read", lambda: self._ack_check_read(acks=acks, check=check, read=count)
            )
        if reply is None:
            return unchecked
        flags, entries = reply
        self._admit(unchecked, {i for i, flag in zip(event_ids, flags, strict=True) if flag})
        return self._decode_batch(entries, None, sniff=True) if entries else []

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
                [i for i in map(event_id_of, [d[4] for d in decoded]) if i is not None]
            )
        self._admit(decoded, already_done)

    def _admit(self, decoded: list[Decoded], already_done: set[str]) -> None:
        """Start handling each of ``decoded`` that is neither in hand already nor among the
        events ``already_done`` (acknowledged at once)."""
        to_handle: list[Decoded] = []
        for entry in decoded:
            entry_id, fields, attempt, first_seen, parsed = entry
            if entry_id in self._in_flight:
                continue  # claimed back while still running here: it is already in hand
            event_id = event_id_of(parsed)
            if event_id is None:
                to_handle.append(entry)  # not an event: dead-lettered when handled
                continue
            if event_id in already_done:
                event = self._parsed_now(entry)
                event_type = event.type if isinstance(event, CloudEvent) else "unknown"
                metrics.DUPLICATES_SKIPPED.labels(self.stream, self.group).inc()
                self._record(Outcome(entry_id, event_type, event_id, "ack", attempt=attempt))
                continue
            if self.subscription.idempotent:
                if event_id in self._events_in_hand:
                    event = self._parsed_now(entry)
                    if isinstance(event, CloudEvent):
                        self._set_aside_duplicate(entry_id, fields, attempt, first_seen, event)
                        continue
                else:
                    self._events_in_hand[event_id] = entry_id
            to_handle.append(entry)
        if to_handle:
            self._start_handlers(to_handle)

    @staticmethod
    def _parsed_now(entry: Decoded) -> CloudEvent | Exception:
        """The entry's event, parsed now if only its id was read so far."""
        parsed = entry[4]
        return decoded_event(entry[1], None) if isinstance(parsed, str) else parsed

    def _decode_batch(
        self, entries: list[Any], deliveries: dict[str, int] | None, *, sniff: bool = False
    ) -> list[Decoded]:
        """Each entry with its attempt and event (with ``sniff``, of the usual entry only its
        event id: its handler parses it); another group's retry is acknowledged here and
        left out (it is not ours to handle)."""
        decoded: list[Decoded] = []
        for raw_id, raw_fields in entries:
            entry_id = as_text(raw_id)
            redelivered = 0 if deliveries is None else deliveries.get(entry_id, 1) - 1
            if type(raw_fields) is dict:
                fields = raw_fields
                event_json = fields.get(EVENT_FIELD) if len(fields) == 1 else None
            elif len(raw_fields) == 2 and raw_fields[0] == EVENT_FIELD:
                # a script's reply: the fields as a flat list
                fields = {EVENT_FIELD: raw_fields[1]}
                event_json = raw_fields[1]
            else:
                fields = dict(zip(raw_fields[::2], raw_fields[1::2], strict=True))
                event_json = None
            if event_json is not None:
                # a first publication (the usual entry): no routing fields to read
                attempt, first_seen = 1 + redelivered, id_ms(entry_id)
                parsed = (sniff and sniffed_event_id(event_json)) or decoded_event(
                    fields, event_json
                )
            else:
                target, carried, first_seen = carried_routing(fields, entry_id)
                if target is not None and target != self._group_bytes:
                    # another group's retry: not ours to handle, only to acknowledge
                    self._record(Outcome(entry_id, NOT_OURS, None, "ack", counted=False))
                    continue
                attempt = carried + redelivered
                parsed = decoded_event(fields, None)
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
        try:
            flags, _entries = await self._ack_check_read(check=event_ids)
        except REDIS_DOWN:
            return set()  # handling again is safe: effects are idempotent downstream
        return {event_id for event_id, flag in zip(event_ids, flags, strict=True) if flag}
