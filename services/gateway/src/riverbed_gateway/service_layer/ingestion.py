"""Ingestion: ``POST /v1/events`` and ``POST /v1/events:batch``, the only door for upstream
systems, once the request is authenticated and its body read as JSON.

Order of checks, cheapest and least revealing first: authentication (401), content
type (415), size (413), JSON (400; 422 for nesting deeper than ``MAX_JSON_DEPTH`` or a number
no float holds) — those in the entrypoint —, then shape (422), type (422 unknown, 403 not
public), source (422 in the ``urn:riverbed:`` namespace), contract and delivery time (422),
scopes (403), idempotency (replay, 409, 422), rate limit (429), backpressure (503); then
publish and answer 202. The rules of each are in :mod:`riverbed_gateway.domain`.

Events for later wait in their stream's delay store, owned by the API key's id, which alone
may look them up or cancel them (:mod:`.scheduled_events`). Every accepted item says when
its event is delivered (``deliver_at``); ``entry_id`` is null for an event kept for later,
which gets its entry when it is appended.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic_core import PydanticSerializationError

from riverbed.problems import Problem
from riverbed.ratelimit import Decision
from riverbed_contracts import CloudEvent
from riverbed_contracts.registry import get_spec
from riverbed_gateway import metrics
from riverbed_gateway.domain.api_keys import ApiKey, forbidden
from riverbed_gateway.domain.delivery import delivery_times, rfc3339
from riverbed_gateway.domain.events import (
    EventIn,
    derived_id,
    posted_events,
    to_event,
    valid_traceparent,
)
from riverbed_gateway.domain.idempotency import fingerprint, validate_key
from riverbed_gateway.service_layer.ports import (
    ApiKeys,
    Backpressure,
    EventStreams,
    IdempotencyRecords,
    RateLimit,
)
from riverbed_gateway.settings import GatewaySettings


@dataclass(slots=True)
class Submission:
    """What of an ingestion request, besides its body, decides the answer."""

    method: str
    path: str
    batch: bool
    correlation_id: str | None  # X-Request-Id: every event's correlationid
    traceparent: str | None  # as sent; kept only when well formed
    idempotency_key: str | None  # as sent


@dataclass(slots=True)
class Answer:
    """The answer to give: status, JSON body, headers."""

    status: int
    body: dict[str, Any]
    headers: Mapping[str, str]


@dataclass(slots=True)
class _Published:
    decision: Decision  # the rate limit's, whose headers the 202 carries
    entry_ids: Sequence[str | None]
    due_ms: dict[int, int]  # index -> when an event kept for later is due (ms)


class Ingestion:
    """The ingestion pipeline, with its collaborators passed in."""

    def __init__(
        self,
        settings: GatewaySettings,
        keys: ApiKeys,
        idempotency: IdempotencyRecords,
        rate_limit: RateLimit,
        backpressure: Backpressure,
        streams: EventStreams,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.idempotency = idempotency
        self.rate_limit = rate_limit
        self.backpressure = backpressure
        self.streams = streams
        self._clock = clock

    async def authenticate(self, authorization: str | None) -> ApiKey:
        return await self.keys.authenticate(authorization)

    async def ingest(
        self, key: ApiKey, raw: bytes, document: Any, submission: Submission
    ) -> Answer:
        """Publish what ``key`` posted (``raw``, read as ``document``), or replay the answer
        to its twin; a :class:`Problem` for every refusal."""
        batch = submission.batch
        items = posted_events(
            document, batch=batch, max_batch_events=self.settings.max_batch_events
        )
        idempotency_key = submission.idempotency_key
        if idempotency_key is not None:
            validate_key(idempotency_key)
        elif not batch and items[0].id:
            idempotency_key = f"event:{items[0].id}"  # the client's id is the dedup key
        events = self._events(items, key, submission, idempotency_key)
        now_s = self._clock()
        now_ms = int(now_s * 1000)
        # index -> delivery time of each event kept for later; most requests have none, and
        # pay one pass over their events for it
        later = (
            delivery_times(items, now_s, now_ms, batch=batch, limit_s=self.settings.max_delay_s)
            if any(item.deliver_at is not None or item.delay is not None for item in items)
            else {}
        )
        stream_of = {t: get_spec(t).stream for t in {event.type for event in events}}
        for event_type in sorted(stream_of):  # once per type, not per event
            if not key.allows(event_type):
                raise forbidden(key, event_type)
        request_print = ""
        if idempotency_key is not None:
            request_print = fingerprint(submission.method, submission.path, raw)
            replay = await self.idempotency.claim(key.id, idempotency_key, request_print)
            if replay is not None:
                return Answer(replay.status, replay.body, {"Idempotent-Replayed": "true"})
        try:
            published = await self._publish(key, events, later, stream_of, now_ms, batch)
        except BaseException:
            if idempotency_key is not None:
                await self.idempotency.release(key.id, idempotency_key)
            raise
        body = _accepted(items, events, published, stream_of, now_ms, batch)
        if idempotency_key is not None:
            await self.idempotency.complete(key.id, idempotency_key, request_print, 202, body)
        return Answer(202, body, published.decision.headers())

    def _events(
        self,
        items: Sequence[EventIn],
        key: ApiKey,
        submission: Submission,
        idempotency_key: str | None,
    ) -> list[CloudEvent]:
        correlation_id = submission.correlation_id or uuid.uuid4().hex
        traceparent = valid_traceparent(submission.traceparent)
        batch = submission.batch
        return [
            to_event(
                item,
                key,
                correlation_id,
                derived_id(key, idempotency_key, index)
                if idempotency_key is not None and not item.id
                else None,
                ("events", index) if batch else (),
                traceparent,
            )
            for index, item in enumerate(items)
        ]

    async def _publish(
        self,
        key: ApiKey,
        events: list[CloudEvent],
        later: dict[int, datetime],
        stream_of: dict[str, str],
        now_ms: int,
        batch: bool,
    ) -> _Published:
        """Within the key's rate limit and the streams' backpressure, publish ``events``."""
        decision = await self.rate_limit.take(key.id, len(events))
        if not decision.allowed:
            raise Problem(
                429,
                "rate-limited",
                "Too many events",
                f"API key {key.name!r} is over its rate limit "
                f"({self.settings.rate_limit_per_s:g} events/s, bursts of {decision.limit})",
                headers=decision.headers(),
            )
        self.backpressure.check(set(stream_of.values()))
        entry_ids: Sequence[str | None]
        due_ms: dict[int, int] = {}
        try:
            if later:
                entry_ids, due_ms = await self.streams.append_and_keep(
                    events, later, key.id, now_ms
                )
            elif batch:
                entry_ids = await self.streams.append_many(events)
            else:
                entry_ids = [await self.streams.append_validated(events[0])]
        except PydanticSerializationError:
            raise Problem(
                422,
                "invalid-event-data",
                "Invalid event data",
                "data is nested too deeply to be stored",
            ) from None
        return _Published(decision, entry_ids, due_ms)


def _accepted(
    items: Sequence[EventIn],
    events: Sequence[CloudEvent],
    published: _Published,
    stream_of: dict[str, str],
    now_ms: int,
    batch: bool,
) -> dict[str, Any]:
    """The 202's body: plain dicts in the shape of ``Accepted`` (the documented model)."""
    delivered_now = rfc3339(now_ms)
    accepted = [
        {
            "id": item.id or e.id,
            "event_id": e.id,
            "type": e.type,
            "stream": stream_of[e.type],
            "entry_id": i,
            "deliver_at": delivered_now,
        }
        for item, e, i in zip(items, events, published.entry_ids, strict=True)
    ]
    for index, when_ms in published.due_ms.items():
        accepted[index]["deliver_at"] = rfc3339(when_ms)
    for event_type, count in Counter(event.type for event in events).items():
        metrics.child(metrics.ACCEPTED_EVENTS, event_type).inc(count)
    return {"events": accepted} if batch else accepted[0]
