"""Request and response bodies of the management API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from riverbed.problems import row_cursor_check, row_cursor_query
from riverbed_webhooks.domain.matching import FILTER_PATTERN
from riverbed_webhooks.domain.model import Attempt, Delivery, Endpoint
from riverbed_webhooks.domain.urls import MAX_URL_LENGTH
from riverbed_webhooks.service_layer.endpoints import MAX_CONCURRENCY, MAX_FILTERS, MAX_RATE_PER_S

#: ``?before=``: attempts older than this attempt id (an ``AttemptList.next_before``)
BeforeAttempt = Annotated[
    int | None,
    row_cursor_query(1, "an attempt id (next_before)"),
    row_cursor_check("before", 1, "an attempt id (next_before)"),
]


# What the document says of these fields the service layer checks (it answers 422 with its
# own messages, which say what is accepted); the fuzz tests hold the two to the same rules.
# A URL's host is judged beyond any schema (SSRF guard): see the url field's description.
URL_DOC: Final = (
    "http(s) URL the events are POSTed to, without credentials or #fragment. Refused (422) "
    "besides: an IP-literal host that is not public (loopback, private, link-local, CGNAT, "
    "…), an IPv4 address spelt any way but a.b.c.d (2130706433, 127.1, 0x7f000001, "
    "percent-encoded, full-width, trailing dot), a percent-encoded host, a port outside "
    "1-65535, spaces or control characters"
)
URL_SCHEMA: Final[JsonDict] = {
    "minLength": 1,
    "maxLength": MAX_URL_LENGTH,
    # http(s), a host, no spaces or control characters; the rest is in the description
    "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\\x00-\\x20\\x7f][^\\x00-\\x20\\x7f]*$",
}
FILTERS_SCHEMA: Final[JsonDict] = {
    "maxItems": MAX_FILTERS,
    "items": {"type": "string", "pattern": FILTER_PATTERN.pattern},
}
FILTERS_DOC: Final = (
    "filters: 'payment.succeeded.v1', 'payment.succeeded', 'payment.*' or '*'; empty: every event"
)
RATE_SCHEMA: Final[JsonDict] = {"minimum": 1, "maximum": MAX_RATE_PER_S}
CONCURRENCY_SCHEMA: Final[JsonDict] = {"minimum": 1, "maximum": MAX_CONCURRENCY}


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description=URL_DOC, json_schema_extra=URL_SCHEMA)
    description: str = Field(default="", max_length=1000)
    event_types: list[str] = Field(
        default_factory=list, description=FILTERS_DOC, json_schema_extra=FILTERS_SCHEMA
    )
    rate_limit_per_s: int | None = Field(
        default=None, description="requests a second at most", json_schema_extra=RATE_SCHEMA
    )
    max_concurrency: int | None = Field(
        default=None, description="requests in flight at most", json_schema_extra=CONCURRENCY_SCHEMA
    )


class EndpointPatch(BaseModel):
    """Fields to change; absent fields stay. ``null`` clears a limit."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, description=URL_DOC, json_schema_extra=URL_SCHEMA)
    description: str | None = Field(default=None, max_length=1000)
    event_types: list[str] | None = Field(
        default=None, description=FILTERS_DOC, json_schema_extra=FILTERS_SCHEMA
    )
    rate_limit_per_s: int | None = Field(default=None, json_schema_extra=RATE_SCHEMA)
    max_concurrency: int | None = Field(default=None, json_schema_extra=CONCURRENCY_SCHEMA)


class EndpointOut(BaseModel):
    id: str
    url: str
    description: str
    event_types: list[str]
    rate_limit_per_s: int | None
    max_concurrency: int | None
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    secret_rotation_ends_at: datetime | None = Field(
        description="until when the previous secret still signs, during a rotation"
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, endpoint: Endpoint, now: datetime) -> EndpointOut:
        rotating = (
            endpoint.previous_secret_expires_at
            if endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > now
            else None
        )
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            description=endpoint.description,
            event_types=list(endpoint.event_types),
            rate_limit_per_s=endpoint.rate_limit_per_s,
            max_concurrency=endpoint.max_concurrency,
            enabled=endpoint.enabled,
            disabled_reason=endpoint.disabled_reason.value if endpoint.disabled_reason else None,
            disabled_at=endpoint.disabled_at,
            secret_rotation_ends_at=rotating,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
        )


class EndpointWithSecret(EndpointOut):
    secret: str = Field(description="whsec_…: shown only now; store it to verify signatures")


class EndpointList(BaseModel):
    data: list[EndpointOut]
    next_after: str | None = Field(description="pass as ?after= for the next page; null: done")


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_period_s: float | None = Field(
        default=None, ge=0, le=30 * 86_400, description="how long the old secret still signs"
    )


class SecretOut(BaseModel):
    secret: str
    previous_secret_expires_at: datetime | None


class AttemptOut(BaseModel):
    id: int
    delivery_id: str
    task_id: str
    endpoint_id: str
    event_id: str
    attempt: int
    attempted_at: datetime
    succeeded: bool
    status_code: int | None
    duration_ms: int
    response_body: str | None
    error: str | None
    error_kind: str | None

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptOut:
        return cls.model_validate(attempt.model_dump())


class AttemptList(BaseModel):
    data: list[AttemptOut]
    next_before: int | None = Field(description="pass as ?before= for older attempts")


class DeliveryOut(BaseModel):
    delivery_id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: str
    task_id: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryOut:
        return cls.model_validate(delivery.model_dump(exclude={"event"}))


class DeliveryList(BaseModel):
    data: list[DeliveryOut]


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: datetime = Field(description="replay failed deliveries created at or after (RFC 3339)")


class Replayed(BaseModel):
    task_ids: list[str]
    count: int


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
