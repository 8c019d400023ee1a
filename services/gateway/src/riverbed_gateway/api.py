"""``POST /v1/events`` and ``POST /v1/events:batch``: the only door for upstream systems.

Order of checks, cheapest and least revealing first: authentication (401), content
type (415), size (413), JSON (400; 422 for nesting deeper than ``MAX_JSON_DEPTH`` or a number
no float holds), shape (422), type (422 unknown, 403 not public), source (422 in the
``urn:riverbed:`` namespace), contract and delivery time (422), scopes (403), idempotency
(replay, 409, 422), rate limit (429), backpressure (503); then publish and answer 202.

Only public types are accepted (``EventSpec.access``): an internal command or outcome, or a
provider's fact, is refused with 403 whatever the key's scopes, which only narrow the public
types. A client may name its events' ``source``, but not in ``urn:riverbed:``, the services'
own namespace (consumers trust an internal type's source); the default is
``urn:riverbed:gateway:<key id>``.

Event ids are scoped to the API key: a client's ``id`` comes back as the 202's ``id`` and
travels in the event as the ``clientid`` extension, while the CloudEvent ``id`` (what
consumers deduplicate on, the 202's ``event_id``) is a UUIDv5 of the key's id and the
client's id. Two keys posting the same id are two events.

An event may be delivered later: ``deliver_at`` (RFC 3339 with an offset) or ``delay``
(seconds), at most ``GATEWAY_MAX_DELAY_S`` ahead; a time not in the future means now. Events
for later wait in their stream's delay store (``Publisher.publish_later``, owned by the API
key's id, which alone may look them up or cancel them: ``riverbed_gateway.scheduled``).
Every accepted item says when its event is delivered (``deliver_at``); ``entry_id`` is null
for an event kept for later, which gets its entry when it is appended.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)
from pydantic_core import PydanticSerializationError

from riverbed.connection import Redis
from riverbed.delay import DelayStore
from riverbed.publisher import Publisher
from riverbed.ratelimit import LeasedRateLimiter
from riverbed.schemas import self_contained_schema
from riverbed_contracts import CloudEvent
from riverbed_contracts.envelope import DEFAULT_SOURCE, MAX_JSON_DEPTH, nested_deeper_than
from riverbed_contracts.payload import Timestamp
from riverbed_contracts.registry import REGISTRY, EventSpec, get_spec
from riverbed_gateway import metrics
from riverbed_gateway.auth import PUBLIC_TYPES, ApiKey, KeyStore, forbidden
from riverbed_gateway.backpressure import Backpressure
from riverbed_gateway.idempotency import IdempotencyStore, fingerprint, validate_key
from riverbed_gateway.keys import rate_limit_key
from riverbed_gateway.problems import PROBLEM_JSON, Problem, field_errors
from riverbed_gateway.settings import GatewaySettings

#: event ids derived from an Idempotency-Key, so a retried request republishes the same ids
EVENT_ID_NAMESPACE: Final = uuid.UUID("6f1c1c52-8f5e-4a55-9d67-6b0d3b8e2a10")
#: event ids derived from a client's own id: uuid5(this, "<key id>\n<client id>")
CLIENT_ID_NAMESPACE: Final = uuid.UUID("3d0b8f0e-5c1a-4f7e-9a51-2c6e1f4b7d93")
#: the extension attribute carrying a client's own id (CloudEvents: lowercase alphanumeric)
CLIENT_ID_ATTRIBUTE: Final = "clientid"
REQUEST_ID_HEADER: Final = "X-Request-Id"
#: W3C Trace Context: version-traceid-parentid-flags in lowercase hex
_TRACEPARENT: Final = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


class EventIn(BaseModel):
    """One event as an upstream system posts it; the gateway fills in the rest."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, examples=["email.requested.v1"])
    data: dict[str, Any]
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="your id: the dedup key among this API key's events; it comes back as "
        "the 202's id and travels in the event as 'clientid'",
    )
    subject: str | None = Field(default=None, max_length=1024)
    source: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="who produced it, a URI of yours; not in urn:riverbed: (the services' "
        "own); default urn:riverbed:gateway:<API key id>",
    )
    time: Timestamp | None = None
    deliver_at: Timestamp | None = Field(
        default=None,
        description="deliver at this time (RFC 3339 with an offset) instead of now; "
        "not with delay; a time not in the future means now",
        examples=["2030-01-01T09:00:00+01:00"],
    )
    delay: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        strict=True,  # a JSON number: "60" is refused rather than read as 60
        description="deliver this many seconds from now (fractions allowed) instead of now; "
        "not with deliver_at; 0 means now",
        examples=[3600],
    )


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1)


class Accepted(BaseModel):
    id: str = Field(
        description="your id when you gave one, else the event id: what GET and DELETE "
        "/v1/scheduled/{id} take"
    )
    event_id: str = Field(
        description="the CloudEvent id on the stream, which consumers deduplicate on: a "
        "UUIDv5 of the API key's id and your id when you gave one"
    )
    type: str
    stream: str
    entry_id: str | None = Field(
        description="the stream entry; null for an event kept for later (it gets one when due)"
    )
    deliver_at: AwareDatetime = Field(
        description="when the event is appended to its stream (RFC 3339, UTC, ms): the time "
        "of the request for an event delivered now, else the time it is kept for"
    )


class BatchAccepted(BaseModel):
    events: list[Accepted]


def _problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    schema = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
        },
        "required": ["type", "title", "status", "detail"],
    }
    return {
        status: {
            "description": "problem details (RFC 9457)",
            "content": {PROBLEM_JSON: {"schema": schema}},
        }
        for status in statuses
    }


ERRORS = _problem_responses(400, 401, 403, 409, 413, 415, 422, 429, 503)

#: every refusal of the two publishing routes, and when (the OpenAPI document's responses)
INGEST_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    status: {**ERRORS[status], "description": description}
    for status, description in {
        400: "malformed JSON (NaN and Infinity included), or an Idempotency-Key that is not 1 "
        "to 255 printable ASCII characters",
        401: "no or unknown API key",
        403: "a type that is not public (type-not-public), or outside the key's scopes",
        409: "the same Idempotency-Key while its first request is still in flight",
        413: "a body over GATEWAY_MAX_BODY_BYTES",
        415: "a Content-Type other than application/json",
        422: "not the shape of an event (batch), an unknown type, a source in urn:riverbed:, "
        "data failing its contract, deliver_at with delay, a delivery time past "
        "GATEWAY_MAX_DELAY_S, an Idempotency-Key or single event's id reused with another "
        f"body, JSON nested deeper than {MAX_JSON_DEPTH}, a number no 64-bit float holds",
        429: "over the API key's rate limit; Retry-After and RateLimit-* headers",
        503: "backpressure on a target stream (Retry-After), or Redis cannot be reached",
    }.items()
}

#: what _reserved_source refuses, as an ECMA-262 pattern (no inline flags: letters both ways)
_RESERVED_SOURCE_PATTERN: Final = r"^\s*[uU][rR][nN]:[rR][iI][vV][eE][rR][bB][eE][dD](:|\s*$)"
#: what validate_key accepts: 1 to 255 printable ASCII characters
_IDEMPOTENCY_KEY_PATTERN: Final = r"^[\x20-\x7E]{1,255}$"


def _event_schema(settings: GatewaySettings) -> dict[str, Any]:
    """What ``POST /v1/events`` accepts, as exactly as JSON Schema can say it: one of the
    public types, each with its contract as ``data``; a source outside urn:riverbed:; not both
    deliver_at and delay; delay at most GATEWAY_MAX_DELAY_S. (What it cannot say: how far
    ahead deliver_at may be, which ids and Idempotency-Keys were used before, nesting depth.)"""
    schema = self_contained_schema(EventIn)
    properties = schema["properties"]
    properties["type"] = {**properties["type"], "enum": list(PUBLIC_TYPES)}
    string, null = properties["source"]["anyOf"]
    properties["source"]["anyOf"] = [{**string, "not": {"pattern": _RESERVED_SOURCE_PATTERN}}, null]
    number, null = properties["delay"]["anyOf"]
    properties["delay"]["anyOf"] = [{**number, "maximum": settings.max_delay_s}, null]
    schema["anyOf"] = [
        {
            "title": event_type,
            "properties": {
                "type": {"const": event_type},
                "data": self_contained_schema(REGISTRY[event_type].model),
            },
        }
        for event_type in PUBLIC_TYPES
    ]
    schema["not"] = {  # deliver_at and delay, both given (null is not given)
        "required": ["deliver_at", "delay"],
        "properties": {"deliver_at": {"type": "string"}, "delay": {"type": "number"}},
    }
    return schema


def _body_spec(settings: GatewaySettings, batch: bool) -> dict[str, Any]:
    event = _event_schema(settings)
    body = (
        {
            "type": "object",
            "title": "BatchIn",
            "additionalProperties": False,
            "required": ["events"],
            "properties": {
                "events": {
                    "type": "array",
                    "items": event,
                    "minItems": 1,
                    "maxItems": settings.max_batch_events,
                }
            },
        }
        if batch
        else event
    )
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": _IDEMPOTENCY_KEY_PATTERN},
                "description": "replays the first answer for 24 h (Stripe's semantics)",
            }
        ],
    }


class Ingestion:
    """The request pipeline, with its collaborators passed in (no globals)."""

    def __init__(
        self,
        settings: GatewaySettings,
        redis: Callable[[], Redis],
        keys: KeyStore,
        idempotency: IdempotencyStore,
        limiter: LeasedRateLimiter,
        backpressure: Backpressure,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self.idempotency = idempotency
        self.limiter = limiter
        self.backpressure = backpressure

    async def read_json(self, request: Request) -> tuple[bytes, Any]:
        content_type = request.headers.get("content-type", "")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise Problem(
                415,
                "unsupported-media-type",
                "Unsupported media type",
                f"Content-Type {content_type or '(none)'!r} is not accepted; send application/json",
                accepted=["application/json"],
            )
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise _too_large(limit)
        try:
            # what json.loads(body, …) does, with one decoder made at import, not one a call
            document = _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
        except json.JSONDecodeError as error:
            raise _malformed(f"the body is not valid JSON: {error}") from None
        except _NotFinite as error:
            raise Problem(
                422,
                "number-out-of-range",
                "Number out of range",
                f"the body holds the number {error}, beyond what a 64-bit float holds: "
                "readers would turn it into infinity or null; send a finite number",
            ) from None
        except (ValueError, UnicodeDecodeError):
            raise _malformed("the body is not valid JSON (or holds a number too long)") from None
        except RecursionError:
            raise _too_deep() from None
        if nested_deeper_than(document):
            raise _too_deep()
        return bytes(body), document

    def to_event(
        self,
        posted: EventIn,
        key: ApiKey,
        correlation_id: str,
        event_id: str | None,
        at: tuple[str | int, ...],
        traceparent: str | None = None,
    ) -> CloudEvent:
        """The event to publish: 422 for an unknown type, a reserved source or data failing
        its contract, 403 for a type that is not public. Its id is scoped to ``key`` when the
        client gave one; else ``event_id`` (derived from an Idempotency-Key) or a fresh one."""
        spec = REGISTRY.get(posted.type)
        if spec is None:
            raise Problem(
                422,
                "unknown-event-type",
                "Unknown event type",
                f"event type {posted.type!r} is not known; known_types lists those accepted",
                known_types=list(PUBLIC_TYPES),
                errors=[
                    {"loc": [*at, "type"], "msg": "unknown event type", "type": "unknown_type"}
                ],
            )
        if spec.access != "public":
            raise _not_public(spec, at)
        if posted.source is not None and _reserved_source(posted.source):
            raise Problem(
                422,
                "reserved-source",
                "Reserved source",
                f"source {posted.source[:100]!r} is in the {DEFAULT_SOURCE}: namespace, the "
                "services' own: consumers trust a service's events by it, so a client may not "
                "pose as one. Give a URI of your own, or none "
                f"({DEFAULT_SOURCE}:gateway:<API key id>)",
                errors=[{"loc": [*at, "source"], "msg": "reserved source", "type": "reserved"}],
            )
        try:
            spec.model.model_validate(posted.data)
        except ValidationError as error:
            raise Problem(
                422,
                "invalid-event-data",
                "Invalid event data",
                f"data does not match the contract of {posted.type!r}",
                errors=field_errors(list(error.errors()), (*at, "data")),
            ) from None
        attributes: dict[str, Any] = {
            "type": posted.type,
            "data": posted.data,
            "source": posted.source or f"{DEFAULT_SOURCE}:gateway:{key.id}",
            "subject": posted.subject,
            "correlationid": correlation_id,
            "traceparent": traceparent,
        }
        if posted.id:
            # scoped to the key: another key's event of the same client id is another event
            attributes["id"] = scoped_event_id(key.id, posted.id)
            attributes[CLIENT_ID_ATTRIBUTE] = posted.id
        elif event_id:
            attributes["id"] = event_id
        if posted.time is not None:
            attributes["time"] = posted.time
        return CloudEvent(**attributes)

    def kept_for_later(
        self, items: Sequence[EventIn], now_s: float, now_ms: int, batch: bool
    ) -> dict[int, datetime]:
        """Index -> delivery time of each event to keep for later; 422 for both fields or a
        time past ``max_delay_s``. A time not after ``now_ms`` (in the whole ms the delay
        store keeps) is left out: that event is delivered now.
        """
        limit_s = self.settings.max_delay_s
        later: dict[int, datetime] = {}
        for index, item in enumerate(items):
            at: tuple[str | int, ...] = ("events", index) if batch else ()
            if item.deliver_at is not None and item.delay is not None:
                raise Problem(
                    422,
                    "invalid-delivery-time",
                    "Invalid delivery time",
                    "give deliver_at or delay, not both",
                    errors=[
                        {"loc": [*at, name], "msg": msg, "type": "exclusive"}
                        for name, msg in (
                            ("deliver_at", "deliver_at is given with delay: keep one"),
                            ("delay", "delay is given with deliver_at: keep one"),
                        )
                    ],
                )
            if item.delay is not None:
                field, ahead_s = "delay", item.delay
                moment = None
            elif item.deliver_at is not None:
                field, moment = "deliver_at", item.deliver_at
                ahead_s = moment.timestamp() - now_s
            else:
                continue
            if ahead_s > limit_s:
                raise Problem(
                    422,
                    "delivery-too-far-ahead",
                    "Delivery too far ahead",
                    f"{field} is {_seconds(ahead_s)} s ahead; an event may be delivered at most "
                    f"{limit_s} s{_in_days(limit_s)} ahead (GATEWAY_MAX_DELAY_S)",
                    max_delay_s=limit_s,
                    errors=[
                        {
                            "loc": [*at, field],
                            "msg": f"at most {limit_s} s ahead",
                            "type": "too_far_ahead",
                        }
                    ],
                )
            if moment is None:
                moment = datetime.fromtimestamp(now_s + ahead_s, UTC)
            if _whole_ms(moment) > now_ms:
                later[index] = moment
        return later

    async def publish_with_later(
        self,
        publisher: Publisher,
        events: Sequence[CloudEvent],
        later: dict[int, datetime],
        owner: str,
        now_ms: int,
    ) -> tuple[list[str | None], dict[int, int]]:
        """Publish the events due now and keep the others for later, side by side: one script
        per stream for those due now, one per stream and due time for the others.

        Returns the entry ids (None for an event kept) and when each kept event is due (ms): an
        event whose id was already waiting is not kept twice, and its time is the waiting
        one's (the request's when it was already delivered, or waits under another key).
        """
        for event in events:  # every one serializable before any is sent (all or none)
            event.to_json()
        now_indexes = [index for index in range(len(events)) if index not in later]
        by_due: dict[int, list[int]] = {}  # due ms -> indexes: one script per stream and time
        for index, moment in later.items():
            by_due.setdefault(_whole_ms(moment), []).append(index)

        async def publish_now() -> list[str]:
            if not now_indexes:
                return []
            return await publisher.publish_many(
                [events[index] for index in now_indexes], validated=True
            )

        async def keep(indexes: list[int]) -> list[bool]:
            return await publisher.publish_later(
                [events[index] for index in indexes],
                later[indexes[0]],  # every moment of the group is the same whole ms
                validated=True,
                owner=owner,
            )

        appended, kept = await asyncio.gather(
            publish_now(), asyncio.gather(*(keep(indexes) for indexes in by_due.values()))
        )
        entry_ids: list[str | None] = [None] * len(events)
        for index, entry_id in zip(now_indexes, appended, strict=True):
            entry_ids[index] = entry_id
        due = {index: _whole_ms(moment) for index, moment in later.items()}
        already = [
            index
            for indexes, flags in zip(by_due.values(), kept, strict=True)
            for index, flag in zip(indexes, flags, strict=True)
            if not flag
        ]
        if already:
            found = await asyncio.gather(
                *(
                    DelayStore(publisher.redis, publisher.stream_for(events[i].type)).get(
                        events[i].id, owner=owner
                    )
                    for i in already
                )
            )
            for index, waiting in zip(already, found, strict=True):
                if waiting is not None and waiting.deliver_at is not None:
                    due[index] = round(waiting.deliver_at.timestamp() * 1000)
                else:
                    due[index] = now_ms
        return entry_ids, due

    async def ingest(self, request: Request, batch: bool) -> JSONResponse:
        key = await self.keys.authenticate(request.headers.get("authorization"))
        raw, document = await self.read_json(request)
        posted = _parse(BatchIn if batch else EventIn, document)
        items = posted.events if isinstance(posted, BatchIn) else [posted]
        if len(items) > self.settings.max_batch_events:
            raise Problem(
                422,
                "batch-too-large",
                "Batch too large",
                f"{len(items)} events in one batch; at most {self.settings.max_batch_events}",
            )
        correlation_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        traceparent = valid_traceparent(request.headers.get("traceparent"))
        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key is not None:
            validate_key(idempotency_key)
        elif not batch and items[0].id:
            idempotency_key = f"event:{items[0].id}"  # the client's id is the dedup key
        events = [
            self.to_event(
                item,
                key,
                correlation_id,
                _derived_id(key, idempotency_key, index)
                if idempotency_key is not None and not item.id
                else None,
                ("events", index) if batch else (),
                traceparent,
            )
            for index, item in enumerate(items)
        ]
        now_s = time.time()
        now_ms = int(now_s * 1000)
        # index -> delivery time of each event kept for later; most requests have none, and
        # pay one pass over their events for it
        later = (
            self.kept_for_later(items, now_s, now_ms, batch)
            if any(item.deliver_at is not None or item.delay is not None for item in items)
            else {}
        )
        stream_of = {t: get_spec(t).stream for t in {event.type for event in events}}
        for event_type in sorted(stream_of):  # once per type, not per event
            if not key.allows(event_type):
                raise forbidden(key, event_type)
        request_print = ""
        if idempotency_key is not None:
            request_print = fingerprint(request.method, request.scope["path"], raw)
            replay = await self.idempotency.claim(key.id, idempotency_key, request_print)
            if replay is not None:
                return JSONResponse(
                    replay.body, status_code=replay.status, headers={"Idempotent-Replayed": "true"}
                )
        try:
            decision = await self.limiter.take(rate_limit_key(key.id), len(events))
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
            due_ms: dict[int, int] = {}  # index -> when an event kept for later is due (ms)
            try:
                publisher = Publisher(self.redis())
                if later:
                    entry_ids, due_ms = await self.publish_with_later(
                        publisher, events, later, key.id, now_ms
                    )
                else:
                    entry_ids = (
                        await publisher.publish_many(events, validated=True)
                        if batch
                        else [await publisher.publish(events[0], validated=True)]
                    )
            except PydanticSerializationError:
                raise Problem(
                    422,
                    "invalid-event-data",
                    "Invalid event data",
                    "data is nested too deeply to be stored",
                ) from None
        except BaseException:
            if idempotency_key is not None:
                await self.idempotency.release(key.id, idempotency_key)
            raise
        # plain dicts in the shape of Accepted (the documented response model)
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
            for item, e, i in zip(items, events, entry_ids, strict=True)
        ]
        if later:
            for index, when_ms in due_ms.items():
                accepted[index]["deliver_at"] = rfc3339(when_ms)
        for event_type, count in Counter(event.type for event in events).items():
            metrics.ACCEPTED_EVENTS.labels(event_type).inc(count)
        body: dict[str, Any] = {"events": accepted} if batch else accepted[0]
        if idempotency_key is not None:
            await self.idempotency.complete(key.id, idempotency_key, request_print, 202, body)
        return JSONResponse(body, status_code=202, headers=decision.headers())


def _parse(model: type[EventIn] | type[BatchIn], document: Any) -> EventIn | BatchIn:
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise Problem(
            422,
            "invalid-request",
            "Invalid request",
            "the body does not have the shape of an event" + (" batch" if model is BatchIn else ""),
            errors=field_errors(list(error.errors())),
        ) from None


def valid_traceparent(header: str | None) -> str | None:
    """The caller's W3C ``traceparent`` when well formed, else None: Trace Context says an
    invalid one is ignored, so a bad header never refuses an event."""
    if header is None:
        return None
    value = header.strip()
    if (
        not _TRACEPARENT.match(value)
        or value.startswith("ff")  # version 255 is invalid
        or value[3:35] == "0" * 32  # an all-zero trace id is invalid
        or value[36:52] == "0" * 16  # so is an all-zero parent id
    ):
        return None
    return value


def rfc3339(ms: int) -> str:
    """A time in ms since the epoch as RFC 3339 in UTC with ms (``2030-01-01T08:00:00.000Z``)."""
    seconds, millis = divmod(ms, 1000)
    return f"{_utc_second(seconds)}.{millis:03d}Z"


@lru_cache(maxsize=256)
def _utc_second(seconds: int) -> str:
    # every answer formats its time: a second's text is made once, not once a request
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value < 1e12 else f"{value:.3g}"  # no 300-digit numbers


def _in_days(seconds: int) -> str:
    return f" ({seconds / 86_400:g} days)" if seconds >= 86_400 else ""


def _whole_ms(moment: datetime) -> int:
    """``moment`` in ms since the epoch, as the delay store keeps it (``Publisher``)."""
    return int(moment.timestamp() * 1000)


def _derived_id(key: ApiKey, idempotency_key: str, index: int) -> str:
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{key.id}\n{idempotency_key}\n{index}"))


def scoped_event_id(key_id: str, client_id: str) -> str:
    """The CloudEvent id of the event a client posted with its own id ``client_id`` under the
    API key ``key_id``: the same on every retry, another one under any other key."""
    return str(uuid.uuid5(CLIENT_ID_NAMESPACE, f"{key_id}\n{client_id}"))


@lru_cache(maxsize=1024)
def _reserved_source(source: str) -> bool:
    # cached: a client sends the same few sources again and again (a dict lookup instead of
    # two new strings an event). URN namespace ids are case-insensitive (RFC 8141):
    # URN:Riverbed: is refused too
    lowered = source.strip().lower()
    return lowered == DEFAULT_SOURCE or lowered.startswith(DEFAULT_SOURCE + ":")


def _not_public(spec: EventSpec, at: tuple[str | int, ...]) -> Problem:
    services = " and ".join(spec.producers)
    plural = "s" if len(spec.producers) > 1 else ""
    if spec.access == "provider":
        who = "the gateway's signed provider webhooks (/v1/inbound/payments/{provider})" + (
            f" and the {services} service{plural}" if services else ""
        )
    else:
        who = f"the {services} service{plural}" if services else "no client"
    return Problem(
        403,
        "type-not-public",
        "Event type not public",
        f"event type {spec.type!r} is {spec.access}: only {who} may produce it. The gateway "
        "accepts public types only, whatever an API key's scopes; public_types lists them",
        access=spec.access,
        producers=list(spec.producers),
        public_types=list(PUBLIC_TYPES),
        errors=[{"loc": [*at, "type"], "msg": f"{spec.access} type", "type": "not_public"}],
    )


class _NotFinite(ValueError):
    """A JSON number past the float range (``1e999``): json would read it as infinity."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text[:40])  # at most 40 characters of it in the problem's detail
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: the request bodies' JSON decoder: NaN and Infinity refused, numbers past the float range
#: too (_finite), made once (json.loads with any hook makes a new decoder every call)
_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite)


def _too_deep() -> Problem:
    return Problem(
        422,
        "nested-too-deeply",
        "Nested too deeply",
        f"the body nests objects and arrays more than {MAX_JSON_DEPTH} levels deep; at most "
        f"{MAX_JSON_DEPTH} are accepted, so that every reader of the streams can decode it",
        max_depth=MAX_JSON_DEPTH,
    )


def _malformed(detail: str) -> Problem:
    return Problem(400, "malformed-json", "Malformed JSON", detail)


def _too_large(limit: int) -> Problem:
    return Problem(413, "payload-too-large", "Payload too large", f"the body exceeds {limit} bytes")


def router(ingestion: Ingestion) -> APIRouter:
    routes = APIRouter(tags=["events"])

    @routes.post(
        "/v1/events",
        status_code=202,
        response_model=Accepted,
        responses=INGEST_ERRORS,
        openapi_extra=_body_spec(ingestion.settings, batch=False),
        summary="Publish one event",
    )
    async def publish_event(request: Request) -> JSONResponse:
        return await ingestion.ingest(request, batch=False)

    @routes.post(
        "/v1/events:batch",
        status_code=202,
        response_model=BatchAccepted,
        responses=INGEST_ERRORS,
        openapi_extra=_body_spec(ingestion.settings, batch=True),
        summary="Publish up to 500 events, all or none",
    )
    async def publish_batch(request: Request) -> JSONResponse:
        return await ingestion.ingest(request, batch=True)

    return routes
