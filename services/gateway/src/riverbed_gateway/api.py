"""``POST /v1/events`` and ``POST /v1/events:batch``: the only door for upstream systems.

Order of checks, cheapest and least revealing first: authentication (401), content
type (415), size (413), JSON (400), shape and contract (422), scopes (403),
idempotency (replay, 409, 422), rate limit (429), backpressure (503); then publish,
all events of a request in one pipeline, and answer 202.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticSerializationError

from riverbed.connection import Redis
from riverbed.keys import rate_limit_key
from riverbed.publisher import Publisher
from riverbed.ratelimit import LeasedRateLimiter
from riverbed_contracts import CloudEvent
from riverbed_contracts.generate import self_contained_schema
from riverbed_contracts.registry import REGISTRY, get_spec
from riverbed_gateway import metrics
from riverbed_gateway.auth import ApiKey, KeyStore, forbidden
from riverbed_gateway.backpressure import Backpressure
from riverbed_gateway.idempotency import IdempotencyStore, fingerprint, validate_key
from riverbed_gateway.problems import PROBLEM_JSON, Problem, field_errors
from riverbed_gateway.settings import GatewaySettings

#: event ids derived from an Idempotency-Key, so a retried request republishes the same ids
EVENT_ID_NAMESPACE: Final = uuid.UUID("6f1c1c52-8f5e-4a55-9d67-6b0d3b8e2a10")
REQUEST_ID_HEADER: Final = "X-Request-Id"
#: W3C Trace Context: version-traceid-parentid-flags in lowercase hex
_TRACEPARENT: Final = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


class EventIn(BaseModel):
    """One event as an upstream system posts it; the gateway fills in the rest."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, examples=["email.requested.v1"])
    data: dict[str, Any]
    id: str | None = Field(
        default=None, min_length=1, max_length=255, description="your id; dedup key"
    )
    subject: str | None = Field(default=None, max_length=1024)
    source: str | None = Field(default=None, min_length=1, max_length=1024)
    time: AwareDatetime | None = None


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1)


class Accepted(BaseModel):
    id: str
    type: str
    stream: str
    entry_id: str


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


def _body_spec(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": self_contained_schema(model)}},
        },
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
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
            return bytes(body), json.loads(body, parse_constant=_refuse_constant)
        except json.JSONDecodeError as error:
            raise _malformed(f"the body is not valid JSON: {error}") from None
        except (ValueError, UnicodeDecodeError):
            raise _malformed("the body is not valid JSON (or holds a number too long)") from None
        except RecursionError:
            raise _malformed("the body is nested too deeply") from None

    def to_event(
        self,
        posted: EventIn,
        key: ApiKey,
        correlation_id: str,
        event_id: str | None,
        at: tuple[str | int, ...],
        traceparent: str | None = None,
    ) -> CloudEvent:
        if posted.type not in REGISTRY:
            raise Problem(
                422,
                "unknown-event-type",
                "Unknown event type",
                f"event type {posted.type!r} is not known",
                known_types=sorted(REGISTRY),
                errors=[
                    {"loc": [*at, "type"], "msg": "unknown event type", "type": "unknown_type"}
                ],
            )
        try:
            get_spec(posted.type).model.model_validate(posted.data)
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
            "source": posted.source or f"urn:riverbed:gateway:{key.name}",
            "subject": posted.subject,
            "correlationid": correlation_id,
            "traceparent": traceparent,
        }
        if posted.id or event_id:
            attributes["id"] = posted.id or event_id
        if posted.time is not None:
            attributes["time"] = posted.time
        return CloudEvent(**attributes)

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
                _derived_id(key, idempotency_key, index) if idempotency_key else None,
                ("events", index) if batch else (),
                traceparent,
            )
            for index, item in enumerate(items)
        ]
        stream_of = {t: get_spec(t).stream for t in {event.type for event in events}}
        for event_type in sorted(stream_of):  # once per type, not per event
            if not key.allows(event_type):
                raise forbidden(key, event_type)
        request_print = ""
        if idempotency_key is not None:
            request_print = fingerprint(request.method, request.scope["path"], raw)
            replay = await self.idempotency.claim(key.name, idempotency_key, request_print)
            if replay is not None:
                return JSONResponse(
                    replay.body, status_code=replay.status, headers={"Idempotent-Replayed": "true"}
                )
        try:
            decision = await self.limiter.take(rate_limit_key(key.name), len(events))
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
            try:
                publisher = Publisher(self.redis())
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
                await self.idempotency.release(key.name, idempotency_key)
            raise
        # plain dicts in the shape of Accepted (the documented response model)
        accepted = [
            {"id": e.id, "type": e.type, "stream": stream_of[e.type], "entry_id": i}
            for e, i in zip(events, entry_ids, strict=True)
        ]
        for event_type, count in Counter(event.type for event in events).items():
            metrics.ACCEPTED_EVENTS.labels(event_type).inc(count)
        body: dict[str, Any] = {"events": accepted} if batch else accepted[0]
        if idempotency_key is not None:
            await self.idempotency.complete(key.name, idempotency_key, request_print, 202, body)
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


def _derived_id(key: ApiKey, idempotency_key: str, index: int) -> str:
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{key.name}\n{idempotency_key}\n{index}"))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


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
        responses=ERRORS,
        openapi_extra=_body_spec(EventIn),
        summary="Publish one event",
    )
    async def publish_event(request: Request) -> JSONResponse:
        return await ingestion.ingest(request, batch=False)

    @routes.post(
        "/v1/events:batch",
        status_code=202,
        response_model=BatchAccepted,
        responses=ERRORS,
        openapi_extra=_body_spec(BatchIn),
        summary="Publish up to 500 events, all or none",
    )
    async def publish_batch(request: Request) -> JSONResponse:
        return await ingestion.ingest(request, batch=True)

    return routes
