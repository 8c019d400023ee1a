"""What the OpenAPI document says of the ingestion routes: their request bodies (as exactly
as JSON Schema can say it), the answers' models, and every refusal with when it happens."""

from __future__ import annotations

from typing import Any, Final

from pydantic import AwareDatetime, BaseModel, Field

from riverbed.schemas import self_contained_schema
from riverbed_contracts.envelope import MAX_JSON_DEPTH
from riverbed_contracts.registry import REGISTRY
from riverbed_gateway.domain.api_keys import PUBLIC_TYPES
from riverbed_gateway.domain.events import EventIn
from riverbed_gateway.entrypoints.problems import ERRORS
from riverbed_gateway.settings import GatewaySettings


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

#: the sources domain.events refuses, as an ECMA-262 pattern (no inline flags: letters both ways)
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


def body_spec(settings: GatewaySettings, batch: bool) -> dict[str, Any]:
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
