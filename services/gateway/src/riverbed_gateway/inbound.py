"""``POST /v1/inbound/payments/{provider}``: payment providers' webhooks, verified and normalized.

There is no API key here: the signature is the authentication. Each provider named in
``GATEWAY_INBOUND_SECRETS`` (``{"stripe": ["whsec_…"]}``) gets this endpoint, and every
one of them speaks Stripe's dialect (signature scheme and event shape below); a
provider with another dialect needs its own verifier and normalizer.

Signature: ``Stripe-Signature: t=<unix s>,v1=<hex>[,v1=<hex>…]``, where each ``v1`` is
HMAC-SHA256 of ``b"<t>." + raw body`` under one of the provider's secrets. Any ``v1``
matching any configured secret passes, so a secret can be rotated without downtime
(the provider signs with old and new, the gateway holds old and new). Other schemes in
the header (Stripe's test-mode ``v0``) are ignored. ``t`` must be within
``GATEWAY_INBOUND_TOLERANCE_S`` (300 s) of the gateway's clock, either way.

Accepted payload, modelled on Stripe's event object (unknown fields are ignored)::

    {
      "id": "evt_1Q…",                 # the provider's event id: the dedup key
      "type": "payment_intent.succeeded",
      "created": 1718000000,           # unix s; becomes the event's time and occurred_at
      "data": {"object": {…}}          # the object the event is about, by type:
    }

What ``data.object`` must hold, by ``type`` (*italics*: optional):

- ``payment_intent.succeeded`` -> ``payment.succeeded.v1``. A PaymentIntent: ``id``,
  ``amount``, ``currency``, *amount_received* (used instead of ``amount`` when > 0),
  *customer*, *description*, *metadata* (string values).
- ``payment_intent.payment_failed`` -> ``payment.failed.v1``. A PaymentIntent: ``id``,
  ``amount``, ``currency``, ``last_payment_error`` with at least one of ``code``,
  ``decline_code``, ``type`` (the first present is the failure code), and *message*.
- ``charge.refunded`` -> ``payment.refunded.v1``. A Charge: ``id``, ``currency``,
  *payment_intent* (the payment's id; the charge's id when absent) and ``refunds.data``,
  newest first: ``data[0]`` is the refund this event reports (``id``, ``amount``,
  *reason*). Stripe API versions from 2022-11-15 leave ``refunds`` out unless expanded.

Amounts are integer minor units (strictly; ``10.5`` is refused) and currencies three
letters, lowercase as Stripe sends them, published uppercase. Any other ``type`` is
answered ``200 {"status": "ignored"}`` and counted: a provider retries every non-2xx
for days, and an event the gateway does not map will never become mappable.

Order of checks: provider configured (a plain 404, as for any unknown path: the configured
providers are not listed to an unauthenticated caller), content type, size and JSON as for
``/v1/events`` (415, 413, 400, 422), signature (400), timestamp (400 ``signature-stale``),
payload (422 with field errors; 400 ``provider-time-out-of-range`` for a ``created`` past
9999-12-31T23:59:59Z, which no RFC 3339 time can carry), backpressure (503), dedup, publish,
202.

Dedup: a marker per (provider, provider event id) is claimed with SET-if-absent before
publishing — first "in flight" for ``GATEWAY_IN_FLIGHT_TTL_S``, then "published" for
``GATEWAY_IDEMPOTENCY_TTL_S``. A delivery of a published event is answered
``200 {"status": "duplicate"}`` and publishes nothing; one that arrives while its twin
is still in flight gets 409 (the provider retries). When publishing fails the marker is
deleted so that the provider's retry can succeed, and a marker whose holder crashed
expires after the in-flight hold. The CloudEvent id is a UUID5 of provider and provider
event id, so whatever gets published twice (a crash between XADD and marking, or a
retry after the window) carries the same id and consumers' idempotency absorbs it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, TypeVar

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from starlette.exceptions import HTTPException

from riverbed.connection import Redis
from riverbed.publisher import Publisher
from riverbed.scripts import LuaScript
from riverbed_contracts.payload import Id
from riverbed_contracts.payments import (
    MinorUnits,
    PaymentFailed,
    PaymentRefunded,
    PaymentSucceeded,
    ProviderName,
    ProviderPayment,
)
from riverbed_contracts.registry import new_event, spec_for
from riverbed_gateway import keys, metrics
from riverbed_gateway.api import ERRORS, REQUEST_ID_HEADER, Accepted, Ingestion, rfc3339
from riverbed_gateway.problems import Problem, field_errors
from riverbed_gateway.settings import GatewaySettings

log = structlog.get_logger(__name__)

#: CloudEvent ids of inbound events: uuid5(this, "<provider>\n<provider event id>")
INBOUND_EVENT_NAMESPACE: Final = uuid.UUID("dafaca80-72fd-4c16-b756-04076c0f63ca")
SIGNATURE_HEADER: Final = "Stripe-Signature"

_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # unix s; ASCII digits only (int() takes any digit)
#: 9999-12-31T23:59:59Z in unix s: the last second a four-digit year (RFC 3339) can name
LAST_UNIX_SECOND: Final = 253_402_300_799
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")

#: Claim a marker or return what holds it. KEYS: marker. ARGV: in-flight record, hold (s).
#: Returns nil when claimed, else the existing record.
_CLAIM = LuaScript("""
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
""")

#: Delete a marker only if it still holds this request's record. KEYS: marker. ARGV: record.
_RELEASE = LuaScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")


# -- signature ----------------------------------------------------------------------


def _bad_signature(reason: str, title: str, detail: str) -> Problem:
    return Problem(400, reason, title, detail)


def _malformed(detail: str) -> Problem:
    return _bad_signature(
        "signature-malformed",
        "Malformed signature header",
        f"{SIGNATURE_HEADER} {detail}; expected 't=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=…]'",
    )


def parse_signature_header(header: str) -> tuple[str, list[str]]:
    """The timestamp (as sent: it is part of the signed bytes) and the ``v1`` signatures."""
    timestamp: str | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise _malformed(f"has an element without '=': {item.strip()[:20]!r}")
        if name == "t":
            if timestamp is not None:
                raise _malformed("has more than one 't'")
            if not _TIMESTAMP.fullmatch(value):
                raise _malformed("has a 't' that is not a unix time in seconds")
            timestamp = value
        elif name == "v1":
            if not _HEX_SHA256.fullmatch(value):
                raise _malformed("has a 'v1' that is not 64 hex digits")
            signatures.append(value.lower())
    if timestamp is None:
        raise _malformed("has no 't'")
    if not signatures:
        raise _malformed("has no 'v1' signature")
    return timestamp, signatures


def verify_signature(
    header: str | None,
    body: bytes,
    secrets: Sequence[bytes],
    *,
    now: float,
    tolerance_s: int,
) -> None:
    """Raise a 400 problem unless a ``v1`` of ``header`` signs ``body`` under a secret."""
    if not header:
        raise _bad_signature(
            "signature-missing",
            "Missing signature",
            f"the {SIGNATURE_HEADER} header is required: it authenticates the provider",
        )
    timestamp, signatures = parse_signature_header(header)
    signed = timestamp.encode() + b"." + body
    expected = [hmac.new(secret, signed, hashlib.sha256).hexdigest().encode() for secret in secrets]
    # every pair is compared (no early exit): the time taken says nothing about which matched
    matches = [hmac.compare_digest(e, s.encode()) for e in expected for s in signatures]
    if not any(matches):
        raise _bad_signature(
            "signature-mismatch",
            "Invalid signature",
            f"no {SIGNATURE_HEADER} v1 signature matches the body under this provider's secrets",
        )
    skew = now - int(timestamp)
    if abs(skew) > tolerance_s:
        raise _bad_signature(
            "signature-stale",
            "Stale signature",
            f"the signature timestamp is {abs(skew):.0f} s in the "
            f"{'past' if skew > 0 else 'future'}; at most {tolerance_s} s is tolerated",
        )


# -- normalization (no I/O) -----------------------------------------------------------

Letters3 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$")]


class _ProviderModel(BaseModel):
    """The provider's shapes: only what is read is declared, the rest is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class ProviderEventType(_ProviderModel):
    type: str = Field(min_length=1)


class ProviderEventData(_ProviderModel):
    object: dict[str, Any]


class TimeOutOfRange(ValueError):
    """A provider's ``created`` past :data:`LAST_UNIX_SECOND`: no datetime holds it."""


class ProviderEvent(_ProviderModel):
    id: Id
    type: str = Field(min_length=1)
    created: int = Field(strict=True, ge=0)
    data: ProviderEventData

    @property
    def occurred_at(self) -> datetime:
        if self.created > LAST_UNIX_SECOND:
            raise TimeOutOfRange(f"created {self.created} is past 9999-12-31T23:59:59Z")
        return datetime.fromtimestamp(self.created, UTC)


class PaymentIntent(_ProviderModel):
    id: Id
    amount: MinorUnits
    amount_received: int | None = Field(default=None, strict=True, ge=0)
    currency: Letters3
    customer: Id | None = None
    description: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class PaymentError(_ProviderModel):
    code: str | None = None
    decline_code: str | None = None
    type: str | None = None
    message: str | None = None

    @model_validator(mode="after")
    def _has_a_code(self) -> PaymentError:
        if not self.failure_code:
            raise ValueError("needs one of 'code', 'decline_code' or 'type'")
        return self

    @property
    def failure_code(self) -> str | None:
        return self.code or self.decline_code or self.type


class FailedPaymentIntent(PaymentIntent):
    last_payment_error: PaymentError


class Refund(_ProviderModel):
    id: Id
    amount: MinorUnits
    reason: str | None = None


class RefundList(_ProviderModel):
    data: list[Refund] = Field(min_length=1)


class Charge(_ProviderModel):
    id: Id
    currency: Letters3
    payment_intent: Id | None = None
    refunds: RefundList


class NotNormalizable(ValueError):
    """The provider's event lacks what its payment event needs (``errors``: field errors)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} field error(s)")
        self.errors = errors


_M = TypeVar("_M", bound=BaseModel)


def _read(model: type[_M], document: Any, at: tuple[str | int, ...] = ()) -> _M:
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise NotNormalizable(field_errors(list(error.errors()), at)) from None


def _succeeded(provider: str, event: ProviderEvent) -> ProviderPayment:
    intent = _read(PaymentIntent, event.data.object, ("data", "object"))
    return PaymentSucceeded(
        provider=provider,
        provider_payment_id=intent.id,
        amount=intent.amount_received or intent.amount,
        currency=intent.currency.upper(),
        occurred_at=event.occurred_at,
        customer_id=intent.customer,
        description=intent.description,
        metadata=intent.metadata,
    )


def _failed(provider: str, event: ProviderEvent) -> ProviderPayment:
    intent = _read(FailedPaymentIntent, event.data.object, ("data", "object"))
    error = intent.last_payment_error
    assert error.failure_code is not None  # PaymentError's validator
    return PaymentFailed(
        provider=provider,
        provider_payment_id=intent.id,
        amount=intent.amount,
        currency=intent.currency.upper(),
        occurred_at=event.occurred_at,
        failure_code=error.failure_code,
        failure_message=error.message,
    )


def _refunded(provider: str, event: ProviderEvent) -> ProviderPayment:
    charge = _read(Charge, event.data.object, ("data", "object"))
    refund = charge.refunds.data[0]  # newest first: the refund this event reports
    return PaymentRefunded(
        provider=provider,
        provider_payment_id=charge.payment_intent or charge.id,
        amount=refund.amount,
        currency=charge.currency.upper(),
        occurred_at=event.occurred_at,
        provider_refund_id=refund.id,
        reason=refund.reason,
    )


#: provider event type -> its normalizer; every other type is ignored
NORMALIZERS: Final[Mapping[str, Callable[[str, ProviderEvent], ProviderPayment]]] = {
    "payment_intent.succeeded": _succeeded,
    "payment_intent.payment_failed": _failed,
    "charge.refunded": _refunded,
}


def normalize(provider: str, document: Any) -> tuple[ProviderEvent, ProviderPayment] | None:
    """The provider's event and the payment it reports; None for a type that is not mapped.

    Raises :class:`NotNormalizable` when the event lacks what its payment needs.
    """
    event_type = _read(ProviderEventType, document).type
    normalizer = NORMALIZERS.get(event_type)
    if normalizer is None:
        return None
    event = _read(ProviderEvent, document)
    try:
        return event, normalizer(provider, event)
    except ValidationError as error:  # the contract refused what the provider models let by
        raise NotNormalizable(field_errors(list(error.errors()), ("payment",))) from None


def event_id(provider: str, provider_event_id: str) -> str:
    """The CloudEvent id of a provider's event: the same on every delivery and retry."""
    return str(uuid.uuid5(INBOUND_EVENT_NAMESPACE, f"{provider}\n{provider_event_id}"))


# -- the endpoint -------------------------------------------------------------------


class InboundOutcome(BaseModel):
    """A delivery answered 200 without publishing: already published, or not a payment."""

    status: Literal["duplicate", "ignored"]
    id: str | None = Field(default=None, description="the event id published for it (duplicate)")
    provider_event_id: str | None = None
    type: str | None = Field(default=None, description="the provider's event type (ignored)")


_PROVIDER_NAME: Final = TypeAdapter(ProviderName)


class InboundPayments:
    """Verify, dedup, normalize and publish providers' payment webhooks."""

    def __init__(
        self,
        settings: GatewaySettings,
        redis: Callable[[], Redis],
        ingestion: Ingestion,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secrets: dict[str, tuple[bytes, ...]] = {}
        for provider, secrets in settings.inbound_secrets.items():
            try:
                _PROVIDER_NAME.validate_python(provider)
            except ValidationError:
                raise ValueError(
                    f"inbound provider {provider!r}: names are lowercase letters, digits, "
                    "'_' and '-', starting with a letter, at most 50 characters"
                ) from None
            if not secrets:
                raise ValueError(f"inbound provider {provider!r} has no signing secret")
            self._secrets[provider] = tuple(s.get_secret_value().encode() for s in secrets)
            for outcome in ("accepted", "duplicate", "ignored"):
                metrics.INBOUND.labels(provider, outcome)  # exported as 0 from the start
        self._redis = redis
        self._read_json = ingestion.read_json
        self._backpressure = ingestion.backpressure
        self._clock = clock
        self.tolerance_s = settings.inbound_tolerance_s
        self.window_s = settings.idempotency_ttl_s
        self.in_flight_s = settings.in_flight_ttl_s

    async def receive(self, provider: str, request: Request) -> JSONResponse:
        secrets = self._secrets.get(provider)
        if secrets is None:
            # answered as any unknown path: which providers are configured is not for an
            # unauthenticated caller to learn. Not counted by provider either: the label
            # would take whatever a caller puts in the URL
            raise HTTPException(404)
        try:
            outcome, response = await self._receive(provider, secrets, request)
        except Problem as problem:
            metrics.INBOUND.labels(provider, problem.reason).inc()
            log.info("inbound delivery refused", provider=provider, reason=problem.reason)
            raise
        except Exception:
            metrics.INBOUND.labels(provider, "error").inc()
            raise
        metrics.INBOUND.labels(provider, outcome).inc()
        return response

    async def _receive(
        self, provider: str, secrets: Sequence[bytes], request: Request
    ) -> tuple[str, JSONResponse]:
        raw, document = await self._read_json(request)
        verify_signature(
            request.headers.get(SIGNATURE_HEADER),
            raw,
            secrets,
            now=self._clock(),
            tolerance_s=self.tolerance_s,
        )
        try:
            normalized = normalize(provider, document)
        except NotNormalizable as error:
            raise Problem(
                422,
                "invalid-provider-event",
                "Invalid provider event",
                "the provider's event lacks what its payment event needs",
                errors=error.errors,
            ) from None
        except TimeOutOfRange as error:
            raise Problem(
                400,
                "provider-time-out-of-range",
                "Time out of range",
                f"{error}: the last time an event can carry (RFC 3339 years have four digits)",
                errors=[{"loc": ["created"], "msg": "past 9999", "type": "out_of_range"}],
            ) from None
        if normalized is None:
            ignored_type = document["type"]
            log.info("inbound event ignored", provider=provider, provider_type=ignored_type)
            body = InboundOutcome(status="ignored", type=ignored_type)
            return "ignored", JSONResponse(body.model_dump(exclude_none=True))
        provider_event, payment = normalized
        spec = spec_for(type(payment))
        event = new_event(
            payment,
            id=event_id(provider, provider_event.id),
            source=f"urn:riverbed:inbound:{provider}",
            subject=payment.provider_payment_id,
            time=provider_event.occurred_at,
            correlationid=request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex,
        )
        self._backpressure.check({spec.stream})

        redis = self._redis()
        marker = keys.inbound_event_key(provider, provider_event.id)
        in_flight = json.dumps({"state": "in_flight", "token": uuid.uuid4().hex})
        existing = await _CLAIM(redis, keys=[marker], args=[in_flight, self.in_flight_s])
        if existing is not None:
            if json.loads(existing)["state"] == "in_flight":
                raise Problem(
                    409,
                    "inbound-event-in-flight",
                    "Event in progress",
                    f"provider event {provider_event.id!r} is being published by another "
                    "delivery; retry later",
                    headers={"Retry-After": "1"},
                )
            body = InboundOutcome(
                status="duplicate", id=event.id, provider_event_id=provider_event.id
            )
            return "duplicate", JSONResponse(body.model_dump(exclude_none=True))
        try:
            entry_id = await Publisher(redis).publish(event)
        except BaseException:
            await _RELEASE(redis, keys=[marker], args=[in_flight])
            raise
        published = json.dumps({"state": "published", "id": event.id, "entry_id": entry_id})
        await redis.set(marker, published, ex=self.window_s)
        metrics.ACCEPTED_EVENTS.labels(event.type).inc()
        log.info(
            "inbound event published",
            provider=provider,
            provider_event_id=provider_event.id,
            event_id=event.id,
            type=event.type,
            stream=spec.stream,
            entry_id=entry_id,
            correlation_id=event.correlationid,
        )
        accepted = {
            "id": event.id,
            "event_id": event.id,
            "type": event.type,
            "stream": spec.stream,
            "entry_id": entry_id,
            "deliver_at": rfc3339(int(self._clock() * 1000)),  # delivered now
        }  # the shape of Accepted
        return "accepted", JSONResponse(accepted, status_code=202)


_PROVIDER_EVENT_SCHEMA: Final = {
    "type": "object",
    "description": "the provider's event (Stripe's shape; unknown fields are ignored)",
    "required": ["id", "type", "created", "data"],
    "properties": {
        "id": {"type": "string", "description": "the dedup key, e.g. evt_1Q2w3e"},
        "type": {"type": "string", "description": "mapped: " + ", ".join(NORMALIZERS)},
        "created": {
            "type": "integer",
            "minimum": 0,
            "maximum": LAST_UNIX_SECOND,
            "description": "unix seconds",
        },
        "data": {
            "type": "object",
            "required": ["object"],
            "properties": {"object": {"type": "object"}},
        },
    },
}


def _request_spec() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _PROVIDER_EVENT_SCHEMA}},
        },
        "parameters": [
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.' + body>[,v1=…]",
            }
        ],
    }


def router(payments: InboundPayments) -> APIRouter:
    routes = APIRouter(tags=["inbound"])
    problem = ERRORS[400]  # every problem response has the same schema

    @routes.post(
        "/v1/inbound/payments/{provider}",
        status_code=202,
        response_model=Accepted,
        responses={
            200: {"model": InboundOutcome, "description": "duplicate or ignored"},
            **{status: problem for status in (400, 404, 409, 413, 415, 422, 503)},
        },
        openapi_extra=_request_spec(),
        summary="Receive a payment provider's signed webhook",
    )
    async def receive_payment_webhook(provider: str, request: Request) -> JSONResponse:
        """Authenticated by the provider's signature (no API key); see the module docs."""
        return await payments.receive(provider, request)

    return routes
