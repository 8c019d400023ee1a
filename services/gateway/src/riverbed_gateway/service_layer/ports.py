"""What the gateway's use cases need from the outside world, as Protocols; the adapters
(``riverbed_gateway.adapters``) implement them over Redis."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from riverbed.delay import DelayedEvent
from riverbed.ratelimit import Decision
from riverbed.schedules import ScheduleDefinition, ScheduleView, Upserted
from riverbed_contracts import CloudEvent
from riverbed_gateway.domain.api_keys import ApiKey
from riverbed_gateway.domain.idempotency import Replay


class ApiKeys(Protocol):
    async def authenticate(self, authorization: str | None) -> ApiKey:
        """The key of an ``Authorization: Bearer …`` header; a 401 problem otherwise."""
        ...


class IdempotencyRecords(Protocol):
    async def claim(self, owner: str, key: str, request_fingerprint: str) -> Replay | None:
        """None when claimed for this request; else the finished twin's answer (409 while
        it is in flight, 422 for another request under the same key)."""
        ...

    async def complete(
        self, owner: str, key: str, request_fingerprint: str, status: int, body: dict[str, Any]
    ) -> None: ...

    async def release(self, owner: str, key: str) -> None: ...


class RateLimit(Protocol):
    async def take(self, key_id: str, events: int) -> Decision:
        """Take ``events`` from the API key's budget (or refuse, taking nothing)."""
        ...


class Backpressure(Protocol):
    def check(self, streams: set[str]) -> None:
        """A 503 problem when a target stream's consumers are too far behind."""
        ...


class EventStreams(Protocol):
    def stream_for(self, event_type: str) -> str: ...

    async def append(self, event: CloudEvent, *, validated: bool) -> str:
        """Append one event now; its entry id."""
        ...

    async def append_validated(self, event: CloudEvent) -> str:
        """Append one validated event now, in a round trip it may share with other
        requests' appends; its entry id."""
        ...

    async def append_many(self, events: Sequence[CloudEvent]) -> list[str]:
        """Append validated events now, all or none; their entry ids in order."""
        ...

    async def append_and_keep(
        self, events: Sequence[CloudEvent], later: Mapping[int, datetime], owner: str, now_ms: int
    ) -> tuple[list[str | None], dict[int, int]]:
        """Append the events due now and keep the others (index -> time in ``later``) in
        their streams' delay stores under ``owner``: the entry ids (None for one kept) and
        when each kept event is due, ms (an id already waiting keeps its time)."""
        ...


@dataclass(frozen=True)
class DedupClaim:
    """What claiming a provider event's marker found: ``held_by`` is ``us`` when this
    delivery now holds it (``record``: what it wrote, to release it by)."""

    marker: str
    record: str
    held_by: Literal["us", "in_flight", "published"]


class InboundDedup(Protocol):
    async def claim(self, provider: str, provider_event_id: str) -> DedupClaim: ...

    async def release(self, claim: DedupClaim) -> None:
        """Give the marker back (publishing failed), unless another delivery holds it."""
        ...

    async def published(self, claim: DedupClaim, event_id: str, entry_id: str) -> None:
        """Mark the event published for the dedup window."""
        ...


class DelayedEvents(Protocol):
    async def holders(
        self, key_id: str, event_ids: tuple[str, ...], streams: tuple[str, ...]
    ) -> list[tuple[str, str]]:
        """(event id, stream) pairs whose delay store waits for an event of that id
        (anyone's) or lately promoted one of this key's, in the order of ``event_ids``."""
        ...

    async def get(self, stream: str, event_id: str, owner: str) -> DelayedEvent | None: ...

    async def cancel(
        self, stream: str, event_id: str, owner: str
    ) -> Literal["cancelled", "promoted", "missing"]: ...


class Schedules(Protocol):
    async def list(self) -> list[ScheduleView]: ...

    async def get(self, name: str) -> ScheduleView | None: ...

    async def upsert(self, definition: ScheduleDefinition) -> Upserted: ...

    async def remove(self, name: str) -> bool: ...

    async def pause(self, name: str) -> ScheduleView | None: ...

    async def resume(self, name: str) -> ScheduleView | None: ...
