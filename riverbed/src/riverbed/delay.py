"""The delay store: what waits to be appended to a stream later.

Two kinds of item wait here, in the stream's own hash slot (so one script can move an item
from the store onto the stream atomically, on Redis Cluster too):

- an event published for later (``Publisher.publish(..., deliver_at=…)``, the gateway's
  ``deliver_at``/``delay``), member ``event:<event id>``: promoted as a plain entry that
  every group of the stream receives;
- a retry or a deferral of one group's delivery, member ``retry:<group>:<entry id>``: the
  consumer parks it here and acknowledges the entry in one script, and the promoter appends
  it again as a new entry that carries the attempt number and is handled by that group only
  (see :data:`ATTEMPT_FIELD` and :data:`GROUP_FIELD`).

So the pending list holds only what a consumer is working on right now, and retention can
trim everything every group acknowledged, however long a retry waits.

Promotion is one script per batch (``scripts.PROMOTE``): any number of promoters may run
side by side, and none promotes an item twice. Consumers run a promoter for their stream.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from riverbed import keys, metrics, scripts
from riverbed.connection import Redis
from riverbed.entry_ids import as_text
from riverbed_contracts import CloudEvent

#: entry field naming the only consumer group that handles a promoted retry; other groups
#: of the stream acknowledge such an entry without handling it
GROUP_FIELD: Final = "group"
#: entry field carrying the attempt number of a promoted retry (1 = first delivery)
ATTEMPT_FIELD: Final = "attempt"
#: entry field carrying when the group first received the event (ms since the epoch)
FIRST_SEEN_FIELD: Final = "first_seen"

#: how long a promoted delayed event is remembered, so that cancelling it answers "too late"
#: (409) rather than "unknown" (404), and publishing the same id again does not repeat it (ms)
PROMOTED_MEMORY_MS: Final = 7 * 24 * 3600 * 1000

_PARK = scripts.PARK
_PROMOTE = scripts.PROMOTE
_SCHEDULE = scripts.SCHEDULE
_CANCEL = scripts.CANCEL
_CARRY_OVER = scripts.CARRY_OVER_LEGACY


def event_member(event_id: str) -> str:
    return f"event:{event_id}"


def promoted_by(owner: str, event_id: str) -> str:
    """The promoted set's record that ``owner`` published ``event_id`` (``scripts.PROMOTE``):
    a promoted event is reported to its owner only. The byte length keeps any owner apart."""
    return f"owner:{len(owner.encode())}:{owner}:{event_member(event_id)}"


def retry_member(group: str, entry_id: str) -> str:
    return f"retry:{group}:{entry_id}"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Parked:
    """One delivery to park: the event, where it waits, and what the next delivery carries."""

    entry_id: str
    event: bytes | str  # the CloudEvents JSON document, as read from the entry
    due_ms: int
    next_attempt: int
    first_seen_ms: int
    reason: str
    error: str


@dataclass(frozen=True)
class Promotion:
    promoted: int
    oldest_due_ms: int | None  # due time of the oldest item promoted in this batch
    next_due_ms: int | None  # when the next item falls due; None: the store is empty


@dataclass(frozen=True)
class DelayedEvent:
    """A delayed event as its publisher can look it up."""

    event_id: str
    stream: str
    state: Literal["scheduled", "promoted"]
    deliver_at: datetime | None  # None once promoted
    event: dict[str, Any] | None  # the CloudEvent, while scheduled


class DelayStore:
    """The delay store of one stream."""

    def __init__(self, redis: Redis, stream: str) -> None:
        self.redis = redis
        self.stream = stream
        self.stream_key = keys.stream_key(stream)
        self.delay_key = keys.delay_key(stream)
        self.items_key = keys.delay_items_key(stream)
        self.meta_key = keys.delay_meta_key(stream)
        self.promoted_key = keys.delay_promoted_key(stream)

    # -- retries and deferrals (the consumer) ------------------------------------

    async def park(self, group: str, consumer: str, deliveries: Sequence[Parked]) -> set[str]:
        """Park deliveries this consumer holds and acknowledge them; returns the entry ids parked
        (an entry a sibling claimed meanwhile is not: its new holder decides)."""
        if any(c in group for c in "\t\n"):
            raise ValueError(f"consumer group name {group!r} has a tab or newline")
        args: list[str | bytes | int] = [group, consumer]
        for parked in deliveries:
            extra = json.dumps({"reason": parked.reason, "error": parked.error[:2000]})
            args += [
                parked.entry_id,
                retry_member(group, parked.entry_id),
                parked.due_ms,
                parked.event,
                f"{group}\t{parked.next_attempt}\t{parked.first_seen_ms}\t\t{extra}",
            ]
        done = await _PARK(
            self.redis,
            keys=[self.stream_key, self.delay_key, self.items_key, self.meta_key],
            args=args,
        )
        return {as_text(entry_id) for entry_id in done}

    async def carry_over_legacy(self, group: str, batch: int = 500) -> int:
        """Move retries a version before the delay store scheduled into it; returns how many."""
        legacy = keys.legacy_retry_schedule_key(self.stream, group)
        moved = 0
        while await self.redis.zcard(legacy):
            moved += int(
                await _CARRY_OVER(
                    self.redis,
                    keys=[self.stream_key, legacy, self.delay_key, self.items_key, self.meta_key],
                    args=[group, batch],
                )
            )
        return moved

    # -- promotion ------------------------------------------------------------------

    async def promote_due(self, *, batch: int = 1000, now: int | None = None) -> Promotion:
        """Append up to ``batch`` due items to the stream and remove them from the store."""
        current = now_ms() if now is None else now
        moved, oldest, nearest = await _PROMOTE(
            self.redis,
            keys=[
                self.stream_key,
                self.delay_key,
                self.items_key,
                self.meta_key,
                self.promoted_key,
            ],
            args=[current, batch, PROMOTED_MEMORY_MS],
        )
        if moved:
            metrics.PROMOTED.labels(self.stream).inc(int(moved))
        if oldest is not None:
            late_s = max(current - int(oldest), 0) / 1000
            metrics.PROMOTION_DELAY.labels(self.stream).observe(late_s)
        return Promotion(
            int(moved),
            int(oldest) if oldest is not None else None,
            int(nearest) if nearest is not None else None,
        )

    # -- delayed events (publishers) ----------------------------------------------------

    async def schedule(
        self, events: Sequence[CloudEvent], due_ms: int, *, owner: str = ""
    ) -> list[bool]:
        """Keep events until ``due_ms``; one flag per event: False if its id was already
        scheduled or promoted (it is not scheduled twice). ``owner`` alone may cancel it."""
        if any(c in owner for c in "\t\n"):
            raise ValueError(f"owner {owner!r} has a tab or newline")
        header = f"\t\t\t{owner}\t" + json.dumps({"due_ms": due_ms})
        args: list[str | int] = []
        for event in events:
            member = event_member(event.id)
            args += [member, due_ms, event.to_json(), header, promoted_by(owner, event.id)]
        flags = await _SCHEDULE(
            self.redis,
            keys=[self.delay_key, self.items_key, self.meta_key, self.promoted_key],
            args=args,
        )
        return [bool(flag) for flag in flags]

    async def get(self, event_id: str, *, owner: str = "") -> DelayedEvent | None:
        """A delayed event of ``owner`` by id: scheduled, recently promoted, or None."""
        member = event_member(event_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.items_key, member)
            pipe.hget(self.meta_key, member)
            pipe.zscore(self.promoted_key, promoted_by(owner, event_id))
            raw, header, promoted = await pipe.execute()
        if raw is not None and header is not None:
            *_, stored_owner, details = as_text(header).split("\t", 4)
            if stored_owner != owner:
                return None
            extra = json.loads(details)
            return DelayedEvent(
                event_id,
                self.stream,
                "scheduled",
                datetime.fromtimestamp(int(extra["due_ms"]) / 1000, UTC),
                json.loads(raw),
            )
        if promoted is not None:
            return DelayedEvent(event_id, self.stream, "promoted", None, None)
        return None

    async def cancel(
        self, event_id: str, *, owner: str = ""
    ) -> Literal["cancelled", "promoted", "missing"]:
        """Cancel a delayed event of ``owner``; atomic against promotion: either it is
        cancelled and never delivered, or it was already promoted."""
        result = await _CANCEL(
            self.redis,
            keys=[self.delay_key, self.items_key, self.meta_key, self.promoted_key],
            args=[event_member(event_id), owner, promoted_by(owner, event_id)],
        )
        outcome = as_text(result)
        assert outcome in ("cancelled", "promoted", "missing")
        return outcome  # type: ignore[return-value]

    # -- figures --------------------------------------------------------------------

    async def waiting(self) -> tuple[int, int, int | None]:
        """(items waiting, items already due, due time of the oldest due item in ms or None)."""
        current = now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            self.queue_waiting(pipe, current)
            return self.read_waiting(await pipe.execute(), current)

    def queue_waiting(self, pipe: Any, current_ms: int) -> None:
        """Queue :meth:`waiting`'s three reads on a caller's pipeline (one round trip)."""
        pipe.zcard(self.delay_key)
        pipe.zcount(self.delay_key, "-inf", current_ms)
        pipe.zrange(self.delay_key, 0, 0, withscores=True)

    @staticmethod
    def read_waiting(replies: Sequence[Any], current_ms: int) -> tuple[int, int, int | None]:
        """:meth:`waiting`'s answer from the three replies :meth:`queue_waiting` queued."""
        total, due, oldest = replies[-3:]
        oldest_due = int(oldest[0][1]) if oldest and oldest[0][1] <= current_ms else None
        return int(total), int(due), oldest_due
