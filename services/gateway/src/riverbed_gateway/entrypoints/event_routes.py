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

from riverbed_gateway.entrypoints.body import read_json_body
from riverbed_gateway.entrypoints.dependencies import IngestionDep
from riverbed_gateway.entrypoints.event_openapi import (
    INGEST_ERRORS,
    Accepted,
    BatchAccepted,
    body_spec,
)
from riverbed_gateway.service_layer.ingestion import Ingestion, Submission
from riverbed_gateway.settings import GatewaySettings

REQUEST_ID_HEADER = "X-Request-Id"


def json_body(document: Any) -> bytes:
    """``document`` encoded as :class:`JSONResponse` encodes it (compact, UTF-8)."""
    return json.dumps(
        document, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


async def answer_ingest(ingestion: Ingestion, request: Request, batch: bool) -> JSONResponse:
    """Authenticate, read the body, ingest: the one way both routes and the fast path take."""
    headers = request.headers
    key = await ingestion.authenticate(headers.get("authorization"))
    raw, document = await read_json_body(request, ingestion.settings.max_body_bytes)
    submission = Submission(
        method=request.method,
        path=request.scope["path"],
        batch=batch,
        correlation_id=headers.get(REQUEST_ID_HEADER),
        traceparent=headers.get("traceparent"),
        idempotency_key=headers.get("idempotency-key"),
    )
    answer = await ingestion.ingest(key, raw, document, submission)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


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
