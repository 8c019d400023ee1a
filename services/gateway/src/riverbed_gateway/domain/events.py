"""The events upstream systems post, and the rules that turn one into a CloudEvent.

Only public types are accepted (``EventSpec.access``): an internal command or outcome, or a
provider's fact, is refused with 403 whatever the key's scopes, which only narrow the public
types. A client may name its events' ``source``, but not in ``urn:riverbed:``, the services'
own namespace (consumers trust an internal type's source); the default is
``urn:riverbed:gateway:<key id>``.

Event ids are scoped to the API key: a client's ``id`` comes back as the 202's ``id`` and
travels in the event as the ``clientid`` extension, while the CloudEvent ``id`` (what
consumers deduplicate on, the 202's ``event_id``) is a UUIDv5 of the key's id and the
client's id. Two keys posting the same id are two events.
"""

from __future__ import annotations

import re
import uuid
from functools import lru_cache
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from riverbed.problems import Problem, field_errors
from riverbed_contracts import CloudEvent
from riverbed_contracts.envelope import DEFAULT_SOURCE
from riverbed_contracts.payload import Timestamp
from riverbed_contracts.registry import REGISTRY, EventSpec
from riverbed_gateway.domain.api_keys import PUBLIC_TYPES, ApiKey

#: event ids derived from an Idempotency-Key, so a retried request republishes the same ids
EVENT_ID_NAMESPACE: Final = uuid.UUID("6f1c1c52-8f5e-4a55-9d67-6b0d3b8e2a10")
#: event ids derived from a client's own id: uuid5(this, "<key id>\n<client id>")
CLIENT_ID_NAMESPACE: Final = uuid.UUID("3d0b8f0e-5c1a-4f7e-9a51-2c6e1f4b7d93")
#: the extension attribute carrying a client's own id (CloudEvents: lowercase alphanumeric)
CLIENT_ID_ATTRIBUTE: Final = "clientid"
#: W3C Trace Context: version-traceid-parentid-flags in lowercase hex
_TRACEPARENT: Final = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
#: where in a request's body a field error is: () for a single event, ("events", i) in a batch
Location = tuple[str | int, ...]


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


def to_event(
    posted: EventIn,
    key: ApiKey,
    correlation_id: str,
    event_id: str | None,
    at: Location,
    traceparent: str | None = None,
) -> CloudEvent:
    """The event to publish: 422 for an unknown type, a reserved source or data failing its
    contract, 403 for a type that is not public. Its id is scoped to ``key`` when the client
    gave one; else ``event_id`` (derived from an Idempotency-Key) or a fresh one."""
    spec = _public_spec(posted.type, at)
    if posted.source is not None and _reserved_source(posted.source):
        raise _reserved_source_problem(posted.source, at)
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


def _public_spec(event_type: str, at: Location) -> EventSpec:
    spec = REGISTRY.get(event_type)
    if spec is None:
        raise Problem(
            422,
            "unknown-event-type",
            "Unknown event type",
            f"event type {event_type!r} is not known; known_types lists those accepted",
            known_types=list(PUBLIC_TYPES),
            errors=[{"loc": [*at, "type"], "msg": "unknown event type", "type": "unknown_type"}],
        )
    if spec.access != "public":
        raise _not_public(spec, at)
    return spec


def _reserved_source_problem(source: str, at: Location) -> Problem:
    return Problem(
        422,
        "reserved-source",
        "Reserved source",
        f"source {source[:100]!r} is in the {DEFAULT_SOURCE}: namespace, the "
        "services' own: consumers trust a service's events by it, so a client may not "
        "pose as one. Give a URI of your own, or none "
        f"({DEFAULT_SOURCE}:gateway:<API key id>)",
        errors=[{"loc": [*at, "source"], "msg": "reserved source", "type": "reserved"}],
    )


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


def derived_id(key: ApiKey, idempotency_key: str, index: int) -> str:
    """The id of the ``index``-th event of a request retried under ``idempotency_key``."""
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


def _not_public(spec: EventSpec, at: Location) -> Problem:
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


def posted_events(document: Any, *, batch: bool, max_batch_events: int) -> list[EventIn]:
    """The events of a request's JSON ``document`` (one, or a batch of at most
    ``max_batch_events``); 422 for anything else."""
    model: type[EventIn] | type[BatchIn] = BatchIn if batch else EventIn
    try:
        posted = model.model_validate(document)
    except ValidationError as error:
        raise Problem(
            422,
            "invalid-request",
            "Invalid request",
            "the body does not have the shape of an event" + (" batch" if batch else ""),
            errors=field_errors(list(error.errors())),
        ) from None
    items = posted.events if isinstance(posted, BatchIn) else [posted]
    if len(items) > max_batch_events:
        raise Problem(
            422,
            "batch-too-large",
            "Batch too large",
            f"{len(items)} events in one batch; at most {max_batch_events}",
        )
    return items
