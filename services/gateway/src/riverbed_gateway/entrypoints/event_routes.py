"""``POST /v1/events`` and ``POST /v1/events:batch``: the only door for upstream systems.

Both are served by :class:`~riverbed_gateway.entrypoints.middleware.IngestFastPath` ahead of
FastAPI's routing; these routes answer the same (through :func:`answer_ingest`) and give the
OpenAPI document its description of them. What is checked, in which order, is in
:mod:`riverbed_gateway.service_layer.ingestion`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope

from riverbed_gateway.entrypoints.body import receive_json_body
from riverbed_gateway.entrypoints.dependencies import IngestionDep
from riverbed_gateway.entrypoints.event_openapi import (
    INGEST_ERRORS,
    Accepted,
    BatchAccepted,
    body_spec,
)
from riverbed_gateway.service_layer.ingestion import Answer, Ingestion, Submission
from riverbed_gateway.settings import GatewaySettings

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_KEY: Final = REQUEST_ID_HEADER.lower().encode()  # as ASGI names it


def json_body(document: Any) -> bytes:
    """``document`` encoded as :class:`JSONResponse` encodes it (compact, UTF-8)."""
    return json.dumps(
        document, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


async def answer_ingest(ingestion: Ingestion, request: Request, batch: bool) -> JSONResponse:
    """:func:`ingest_from_asgi` for a route, which has a Request."""
    answer = await ingest_from_asgi(ingestion, request.scope, request.receive, batch)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


async def ingest_from_asgi(
    ingestion: Ingestion, scope: Scope, receive: Receive, batch: bool
) -> Answer:
    """Authenticate, read the body, ingest, from the ASGI scope and messages: the one way
    both routes and the fast path take (which builds no Request). Of a header sent twice,
    the first counts."""
    headers: dict[bytes, bytes] = dict(reversed(scope["headers"]))  # the first of a name wins
    key = await ingestion.authenticate(_header(headers, b"authorization"))
    raw, document = await receive_json_body(
        receive,
        _header(headers, b"content-type") or "",
        _header(headers, b"content-length"),
        ingestion.settings.max_body_bytes,
    )
    submission = Submission(
        method=scope["method"],
        path=scope["path"],
        batch=batch,
        correlation_id=_header(headers, _REQUEST_ID_KEY),
        traceparent=_header(headers, b"traceparent"),
        idempotency_key=_header(headers, b"idempotency-key"),
    )
    return await ingestion.ingest(key, raw, document, submission)


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


#: path, batch or not, answer's model, route name (the operationId's start), summary
_ROUTES: Final = (
    ("/v1/events", False, Accepted, "publish_event", "Publish one event"),
    (
        "/v1/events:batch",
        True,
        BatchAccepted,
        "publish_batch",
        "Publish up to 500 events, all or none",
    ),
)


def router(settings: GatewaySettings) -> APIRouter:
    """The two routes; their documented bodies depend on ``settings`` (batch size, delay)."""
    routes = APIRouter(tags=["events"])
    for path, batch, model, name, summary in _ROUTES:
        routes.add_api_route(
            path,
            _endpoint(batch),
            methods=["POST"],
            name=name,
            status_code=202,
            response_model=model,
            responses=INGEST_ERRORS,
            openapi_extra=body_spec(settings, batch=batch),
            summary=summary,
        )
    return routes


def _endpoint(batch: bool) -> Callable[[Request, Ingestion], Awaitable[JSONResponse]]:
    async def publish(request: Request, ingestion: IngestionDep) -> JSONResponse:
        return await answer_ingest(ingestion, request, batch=batch)

    return publish
