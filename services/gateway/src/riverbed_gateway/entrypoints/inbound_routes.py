"""``POST /v1/inbound/payments/{provider}``: payment providers' webhooks, verified and normalized.

There is no API key here: the signature is the authentication. Each provider named in
``GATEWAY_INBOUND_SECRETS`` (``{"stripe": ["whsec_…"]}``) gets this endpoint, and every
one of them speaks Stripe's dialect (signature scheme and event shape below); a
provider with another dialect needs its own verifier and normalizer.

How a delivery is verified: :mod:`riverbed_gateway.domain.signatures`; what it must hold:
:mod:`riverbed_gateway.domain.providers`; how it is deduplicated and published:
:mod:`riverbed_gateway.service_layer.inbound_payments`.

Order of checks: provider configured (a plain 404, as for any unknown path: the configured
providers are not listed to an unauthenticated caller), content type, size and JSON as for
``/v1/events`` (415, 413, 400, 422), signature (400), timestamp (400 ``signature-stale``),
payload (422 with field errors; 400 ``provider-time-out-of-range`` for a ``created`` past
9999-12-31T23:59:59Z, which no RFC 3339 time can carry), backpressure (503), dedup, publish,
202.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from riverbed.problems import Problem
from riverbed_gateway import metrics
from riverbed_gateway.domain.providers import LAST_UNIX_SECOND, NORMALIZERS
from riverbed_gateway.domain.signatures import SIGNATURE_HEADER
from riverbed_gateway.entrypoints.body import read_json_body
from riverbed_gateway.entrypoints.dependencies import InboundPaymentsDep
from riverbed_gateway.entrypoints.event_openapi import Accepted
from riverbed_gateway.entrypoints.event_routes import REQUEST_ID_HEADER
from riverbed_gateway.entrypoints.problems import ERRORS
from riverbed_gateway.service_layer.inbound_payments import InboundAnswer, InboundPayments

log = structlog.get_logger(__name__)


class InboundOutcome(BaseModel):
    """A delivery answered 200 without publishing: already published, or not a payment."""

    status: Literal["duplicate", "ignored"]
    id: str | None = Field(default=None, description="the event id published for it (duplicate)")
    provider_event_id: str | None = None
    type: str | None = Field(default=None, description="the provider's event type (ignored)")


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


router = APIRouter(tags=["inbound"])


@router.post(
    "/v1/inbound/payments/{provider}",
    status_code=202,
    response_model=Accepted,
    responses={
        200: {"model": InboundOutcome, "description": "duplicate or ignored"},
        **{status: ERRORS[400] for status in (400, 404, 409, 413, 415, 422, 503)},
    },
    openapi_extra=_request_spec(),
    summary="Receive a payment provider's signed webhook",
)
async def receive_payment_webhook(
    provider: str, request: Request, payments: InboundPaymentsDep
) -> JSONResponse:
    """Authenticated by the provider's signature (no API key); see the module docs."""
    if not payments.serves(provider):
        # answered as any unknown path: which providers are configured is not for an
        # unauthenticated caller to learn. Not counted by provider either: the label
        # would take whatever a caller puts in the URL
        raise HTTPException(404)
    try:
        answer = await _receive(payments, provider, request)
    except Problem as problem:
        metrics.INBOUND.labels(provider, problem.reason).inc()
        log.info("inbound delivery refused", provider=provider, reason=problem.reason)
        raise
    except Exception:
        metrics.INBOUND.labels(provider, "error").inc()
        raise
    metrics.INBOUND.labels(provider, answer.outcome).inc()
    return JSONResponse(answer.body, status_code=answer.status)


async def _receive(payments: InboundPayments, provider: str, request: Request) -> InboundAnswer:
    raw, document = await read_json_body(request, payments.max_body_bytes)
    return await payments.receive(
        provider,
        raw,
        document,
        signature=request.headers.get(SIGNATURE_HEADER),
        correlation_id=request.headers.get(REQUEST_ID_HEADER),
    )
