"""``GET`` and ``DELETE /v1/scheduled/{event_id}``: look up or cancel an event kept for later.

Authenticated like publishing (the same API keys, 401) and scoped like it: a key sees and
cancels only the delayed events it published (the delay store's owner is the key's id),
of types its scopes allow. Anything else is answered 404, exactly as an unknown id, so a key
learns nothing about another key's events.

The id in the path is the one the 202 gave as ``id``: the client's own id when it gave one
(the event's id is then derived from it and the key, ``api.scoped_event_id``), else the
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

from collections.abc import Callable
from functools import lru_cache
from typing import Any, Final, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field

from riverbed import keys
from riverbed.connection import Redis
from riverbed.delay import DelayedEvent, DelayStore, event_member, promoted_by
from riverbed_contracts.registry import REGISTRY
from riverbed_gateway.api import ERRORS, rfc3339, scoped_event_id
from riverbed_gateway.auth import ApiKey, KeyStore
from riverbed_gateway.problems import Problem

#: the longest event id the gateway accepts (EventIn.id); a longer one cannot be waiting
MAX_EVENT_ID_LENGTH: Final = 255


class ScheduledEvent(BaseModel):
    """An event kept for later, as its publisher may see it."""

    id: str = Field(description="the id it was looked up by: the client's own, or the event id")
    event_id: str = Field(description="the CloudEvent id (as the 202's event_id)")
    stream: str
    state: Literal["scheduled", "promoted"] = Field(
        description="scheduled: waiting; promoted: appended to its stream (remembered 7 days)"
    )
    deliver_at: AwareDatetime | None = Field(
        description="when it is due (RFC 3339, UTC, ms); null once promoted"
    )
    event: dict[str, Any] | None = Field(
        description="the CloudEvent as it will be appended; null once promoted"
    )


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

    def __init__(self, redis: Callable[[], Redis], keys: KeyStore) -> None:
        self._redis = redis
        self._keys = keys

    async def _holders(
        self, key: ApiKey, event_ids: tuple[str, ...], streams: tuple[str, ...]
    ) -> list[tuple[str, str]]:
        """(event id, stream) pairs whose delay store waits for an event of that id (anyone's:
        ``DelayStore`` then checks the owner) or lately promoted one of this key's, in the
        order of ``event_ids``. One pipeline, two score lookups a stream and id."""
        if not streams:
            return []
        pairs = [(event_id, stream) for event_id in event_ids for stream in streams]
        async with self._redis().pipeline(transaction=False) as pipe:
            for event_id, stream in pairs:
                pipe.zscore(keys.delay_key(stream), event_member(event_id))
                pipe.zscore(keys.delay_promoted_key(stream), promoted_by(key.id, event_id))
            scores = await pipe.execute()
        return [
            pair
            for index, pair in enumerate(pairs)
            if scores[2 * index] is not None or scores[2 * index + 1] is not None
        ]

    async def find(self, key: ApiKey, given_id: str) -> DelayedEvent | None:
        """The key's delayed event of this id (the client's own, else the event id), waiting
        or lately promoted; None otherwise."""
        streams, mixed = _streams_by_scope(key.scopes)
        found: list[tuple[int, DelayedEvent]] = []
        candidates = _candidates(key, given_id)
        for event_id, stream in await self._holders(key, candidates, streams):
            delayed = await DelayStore(self._redis(), stream).get(event_id, owner=key.id)
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
        holders = await self._holders(key, _candidates(key, given_id), streams)
        if holders:  # the first reading that names an event is the one meant
            holders = [pair for pair in holders if pair[0] == holders[0][0]]
        for event_id, stream in holders:
            store = DelayStore(self._redis(), stream)
            if stream in mixed:
                # the stream also carries types outside the key's scopes: cancel only one of
                # its own types (promotion in between still makes the cancel answer 'promoted')
                delayed = await store.get(event_id, owner=key.id)
                if delayed is None or not _in_scope(key, delayed, mixed):
                    continue
            result = await store.cancel(event_id, owner=key.id)
            if result == "cancelled" or (result == "promoted" and outcome == "missing"):
                outcome, concerned = result, stream
        return outcome, concerned

    async def get_route(self, request: Request, event_id: str) -> JSONResponse:
        key = await self._keys.authenticate(request.headers.get("authorization"))
        delayed = await self.find(key, event_id)
        if delayed is None:
            raise _not_found(event_id)
        body = {
            "id": event_id,
            "event_id": delayed.event_id,
            "stream": delayed.stream,
            "state": delayed.state,
            "deliver_at": (
                rfc3339(round(delayed.deliver_at.timestamp() * 1000))
                if delayed.deliver_at is not None
                else None
            ),
            "event": delayed.event,
        }  # the shape of ScheduledEvent
        return JSONResponse(body)

    async def delete_route(self, request: Request, event_id: str) -> Response:
        key = await self._keys.authenticate(request.headers.get("authorization"))
        outcome, stream = await self.cancel(key, event_id)
        if outcome == "cancelled":
            return Response(status_code=204)
        if outcome == "promoted":
            raise Problem(
                409,
                "already-delivered",
                "Already delivered",
                f"event {event_id!r} was already delivered to stream {stream!r}: "
                "it can no longer be cancelled",
                stream=stream,
            )
        raise _not_found(event_id)


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


def _not_found(event_id: str) -> Problem:
    return Problem(
        404,
        "scheduled-event-not-found",
        "Scheduled event not found",
        f"this API key has no event {event_id[:MAX_EVENT_ID_LENGTH]!r} waiting to be delivered "
        "or delivered in the last 7 days",
    )


#: the path parameter, documented by hand: declared as an argument, FastAPI would also
#: document a 422 that no request can get (any text is an id to look up)
_EVENT_ID_PARAMETER: Final = {
    "parameters": [
        {
            "name": "event_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "the id the 202 gave: your own id when you gave one, else the event id",
        }
    ]
}


def router(scheduled: ScheduledEvents) -> APIRouter:
    routes = APIRouter(tags=["events"])
    problem = ERRORS[400]  # every problem response has the same schema

    @routes.get(
        "/v1/scheduled/{event_id:path}",
        response_model=ScheduledEvent,
        responses={
            200: {"description": "the key's event, waiting (scheduled) or lately promoted"},
            401: {**problem, "description": "no or unknown API key"},
            404: {
                **problem,
                "description": "no such event of this key's (never kept, cancelled, another "
                "key's or type outside its scopes, or promoted more than 7 days ago)",
            },
            503: {**problem, "description": "Redis cannot be reached"},
        },
        openapi_extra=_EVENT_ID_PARAMETER,
        summary="Look up an event kept for later",
    )
    async def get_scheduled(request: Request) -> JSONResponse:
        """Authenticated and scoped like publishing: only the key that published the event,
        and only within its scopes, sees it."""
        return await scheduled.get_route(request, request.path_params["event_id"])

    @routes.delete(
        "/v1/scheduled/{event_id:path}",
        status_code=204,
        response_class=Response,
        responses={
            204: {"description": "cancelled: it will never be appended to its stream"},
            401: {**problem, "description": "no or unknown API key"},
            404: {**problem, "description": "no such event of this key's (as for GET)"},
            409: {
                **problem,
                "description": "already delivered: it was appended to its stream (once)",
            },
            503: {
                **problem,
                "description": "Redis cannot be reached; retry (a cancel that went through "
                "answers 404 then)",
            },
        },
        openapi_extra=_EVENT_ID_PARAMETER,
        summary="Cancel an event kept for later",
    )
    async def cancel_scheduled(request: Request) -> Response:
        """Atomic against promotion: either cancelled and never delivered (204), or already
        delivered, exactly once (409)."""
        return await scheduled.delete_route(request, request.path_params["event_id"])

    return routes
