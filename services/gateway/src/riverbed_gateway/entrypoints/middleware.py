"""The gateway's ASGI middleware: the access log (outermost), and the fast path that
serves the two ingestion routes ahead of FastAPI; :class:`GatewayApp`, the FastAPI app that
sends those routes down the two alone."""

from __future__ import annotations

import random
import time
from typing import Any, Final

from fastapi import FastAPI, Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from riverbed import hot_log, tracing
from riverbed.problems import Responder
from riverbed_gateway import metrics
from riverbed_gateway.entrypoints import problems
from riverbed_gateway.entrypoints.event_routes import ingest_from_asgi, json_body

ACCESS_LOGGER: Final = "riverbed_gateway.access"


class AccessLog:
    """Pure ASGI middleware: request id, structured access log, metrics by route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        # a client's id becomes every event's correlationid: only a sane one is kept
        request_id = given if _sane_request_id(given) else f"{random.getrandbits(128):032x}"
        if request_id != given:
            # handlers read the id from the request: give them the one we chose
            scope["headers"] = [
                *(h for h in scope["headers"] if h[0] != b"x-request-id"),
                (b"x-request-id", request_id.encode()),
            ]
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.child(metrics.REQUESTS, template, str(status)).inc()
            metrics.child(metrics.REQUEST_SECONDS, template).observe(elapsed)
            # structlog's line, written without its machinery (riverbed.hot_log)
            hot_log.info(
                ACCESS_LOGGER,
                "request",
                {
                    "method": scope["method"],
                    "path": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "request_id": request_id,
                },
            )


class IngestFastPath:
    """Serves the two ingestion routes straight from ASGI, ahead of FastAPI's routing,
    dependency solving and middleware stack (measured: about twice the requests/s).

    The FastAPI routes of the same paths stay, for the OpenAPI document; errors are
    answered exactly as the app's exception handlers would. The ingestion use case is the
    running service's (``app.state.service.container``): while the gateway is starting or
    stopping, requests go on to those routes, which answer 503.
    """

    BATCH_BY_PATH: Final = {"/v1/events": False, "/v1/events:batch": True}

    def __init__(self, app: ASGIApp, respond: Responder, routes: dict[str, Any]) -> None:
        self.app = app
        self.respond = respond
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        batch = self.BATCH_BY_PATH.get(scope.get("path", "")) if scope["type"] == "http" else None
        if batch is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            ingestion = scope["app"].state.service.container.ingestion
        except RuntimeError:  # not started: the route's dependency answers
            await self.app(scope, receive, send)
            return
        scope["route"] = self.routes[scope["path"]]  # the access log's route label
        response: Response
        try:
            answer = await ingest_from_asgi(ingestion, scope, receive, batch)
        except ClientDisconnect:
            response = problems.client_gone(scope["method"], scope["path"])
        except Exception as error:
            response = self.respond.for_exception(error)
        else:
            # what JSONResponse(answer.body, answer.status, answer.headers) sends, built
            # without a Response object
            body = json_body(answer.body)
            headers = [
                *(
                    (name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in answer.headers.items()
                ),
                (b"content-length", str(len(body)).encode("latin-1")),
                (b"content-type", b"application/json"),
            ]
            await send({"type": "http.response.start", "status": answer.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await response(scope, receive, send)


class GatewayApp(FastAPI):
    """FastAPI, with ``POST`` to the two ingestion routes going straight to
    :attr:`ingest_first` (the access log around :class:`IngestFastPath`) while the gateway
    runs and tracing is off, ahead of FastAPI's own layers, which that path does not need:
    its server-error layer (the fast path answers every exception itself), the native
    telemetry's check for an OpenTelemetry provider (two environment lookups a request;
    none is configured while tracing is off) and the body-size limit (not set: the fast
    path has its own), then the request-span layer (a pass-through while tracing is off).
    Measured: ~10 % of a single-event request. Every other request, and these while tracing
    is on or the gateway is not started, take the whole stack as before."""

    ingest_first: ASGIApp | None = None  # set by the composition root
    #: the service this app belongs to (``state.service``), once a request has looked
    _service: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.ingest_first
        if (
            fast is not None
            and scope["type"] == "http"
            and scope["path"] in IngestFastPath.BATCH_BY_PATH
            and scope["method"] == "POST"
            and not tracing.tracing_enabled()
            and self._serving()
        ):
            scope["app"] = self  # what Starlette gives every request: the fast path reads it
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _serving(self) -> bool:
        service = self._service
        if service is None:
            service = self._service = self.state.service
        try:
            service.container  # noqa: B018 (raises while not started)
        except RuntimeError:
            return False
        return True


def _sane_request_id(value: str) -> bool:
    return 0 < len(value) <= 128 and value.isascii() and value.isprintable()
