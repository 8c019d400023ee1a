"""Delayed events: look up or cancel an event kept for later, as ``GET`` and ``DELETE
/v1/scheduled/{event_id}`` do.

Scoped like publishing: a key sees and cancels only the delayed events it published (the
delay store's owner is the key's id), of types its scopes allow. Anything else is answered
404, exactly as an unknown id, so a key learns nothing about another key's events.

The id in the path is the one the 202 gave as ``id``: the client's own id when it gave one
(the event's id is then derived from it and the key, ``domain.events.scoped_event_id``), else the
event id. Both readings are tried, the client's first.

An event id does not say which stream it waits for: the delay stores of the streams the key
may publish to are probed in one pipeline (a score lookup in each store's waiting set, and
one of the key's own record in its promoted set), and the store that holds the id answers
through ``DelayStore``, which checks the owner. An event stays ``scheduled`` until a
consumer of its stream promotes it (appends it to the stream, within about half a second
of its time); the store remembers a promoted event for 7 days
(``riverbed.delay.PROMOTED_MEMORY_MS``), so GET answers ``promoted`` and DELETE 409
meanwhile, then 404. Cancelling is one script in Redis, atomic against promotion: a
cancelled event is never appended, and an event DELETE answered 409 for is appended
exactly once.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final, Literal

from riverbed.delay import DelayedEvent
from riverbed.problems import Problem
from riverbed_contracts.registry import REGISTRY
from riverbed_gateway.domain.api_keys import ApiKey
from riverbed_gateway.domain.events import scoped_event_id
from riverbed_gateway.service_layer.ports import ApiKeys, DelayedEvents

#: the longest event id the gateway accepts (EventIn.id); a longer one cannot be waiting
MAX_EVENT_ID_LENGTH: Final = 255


@lru_cache(maxsize=1024)
def _streams_by_scope(scopes: tuple[str, ...]) -> tuple[tuple[str, ...], frozenset[str]]:
    """(streams a key with ``scopes`` may publish to, those of them carrying a type it may not
    publish): only in the latter is a type check needed before answering."""
    key = ApiKey("", "", scopes)
    allowed: set[str] = set()
    mixed: set[str] = set()
    for event_type, spec in REGISTRY.items():
        if key.allows(event_type):
            allowed.add(spec.stream)
    for event_type, spec in REGISTRY.items():
        if spec.stream in allowed and not key.allows(event_type):
            mixed.add(spec.stream)
    return tuple(sorted(allowed)), frozenset(mixed)


class ScheduledEvents:
    """Look up and cancel a key's delayed events, wherever they wait."""

    def __init__(self, delayed: DelayedEvents, keys: ApiKeys) -> None:
        self._delayed = delayed
        self._keys = keys

    async def authenticate(self, authorization: str | None) -> ApiKey:
        """The key whose events a request may see (401 otherwise), as for publishing."""
        return await self._keys.authenticate(authorization)

    async def find(self, key: ApiKey, given_id: str) -> DelayedEvent | None:
        """The key's delayed event of this id (the client's own, else the event id), waiting
        or lately promoted; None otherwise."""
        streams, mixed = _streams_by_scope(key.scopes)
        found: list[tuple[int, DelayedEvent]] = []
        candidates = _candidates(key, given_id)
        for event_id, stream in await self._delayed.holders(key.id, candidates, streams):
            delayed = await self._delayed.get(stream, event_id, key.id)
            if delayed is not None and _in_scope(key, delayed, mixed):
                found.append((candidates.index(event_id), delayed))
        # the client's id before an event id; an id reused across streams: the waiting one
        # first, then by stream name
        found.sort(key=lambda item: (item[0], item[1].state != "scheduled", item[1].stream))
        return found[0][1] if found else None

    async def cancel(
        self, key: ApiKey, given_id: str
    ) -> tuple[Literal["cancelled", "promoted", "missing"], str | None]:
        """Cancel the key's delayed event of this id (the client's own, else the event id; in
        every stream it waits for, should the id be reused); the outcome and the stream it
        concerns."""
        streams, mixed = _streams_by_scope(key.scopes)
        outcome: Literal["cancelled", "promoted", "missing"] = "missing"
        concerned: str | None = None
        holders = await self._delayed.holders(key.id, _candidates(key, given_id), streams)
        if holders:  # the first reading that names an event is the one meant
            holders = [pair for pair in holders if pair[0] == holders[0][0]]
        for event_id, stream in holders:
            if stream in mixed:
                # the stream also carries types outside the key's scopes: cancel only one of
                # its own types (promotion in between still makes the cancel answer 'promoted')
                delayed = await self._delayed.get(stream, event_id, key.id)
                if delayed is None or not _in_scope(key, delayed, mixed):
                    continue
            result = await self._delayed.cancel(stream, event_id, key.id)
            if result == "cancelled" or (result == "promoted" and outcome == "missing"):
                outcome, concerned = result, stream
        return outcome, concerned

    async def look_up(self, key: ApiKey, given_id: str) -> DelayedEvent:
        """:meth:`find`, or a 404 problem."""
        delayed = await self.find(key, given_id)
        if delayed is None:
            raise not_found(given_id)
        return delayed

    async def withdraw(self, key: ApiKey, given_id: str) -> None:
        """:meth:`cancel`; a 409 problem when the event was already delivered, else 404
        when there was none to cancel."""
        outcome, stream = await self.cancel(key, given_id)
        if outcome == "promoted":
            raise Problem(
                409,
                "already-delivered",
                "Already delivered",
                f"event {given_id!r} was already delivered to stream {stream!r}: "
                "it can no longer be cancelled",
                stream=stream,
            )
        if outcome == "missing":
            raise not_found(given_id)


def _candidates(key: ApiKey, given_id: str) -> tuple[str, ...]:
    """The event ids ``given_id`` may stand for: the event a client posted with that id of its
    own, then an event of that id (one posted without a client id)."""
    if not 0 < len(given_id) <= MAX_EVENT_ID_LENGTH:
        return ()
    return (scoped_event_id(key.id, given_id), given_id)


def _in_scope(key: ApiKey, delayed: DelayedEvent, mixed: frozenset[str]) -> bool:
    if delayed.stream not in mixed:
        return True  # every type of the stream is in the key's scopes
    # a promoted event's type is no longer known: in such a stream only a waiting one shows
    return delayed.event is not None and key.allows(str(delayed.event.get("type")))


def not_found(event_id: str) -> Problem:
    return Problem(
        404,
        "scheduled-event-not-found",
        "Scheduled event not found",
        f"this API key has no event {event_id[:MAX_EVENT_ID_LENGTH]!r} waiting to be delivered "
        "or delivered in the last 7 days",
    )
