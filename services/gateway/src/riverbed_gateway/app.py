"""The gateway's composition root: settings in, a ready-to-serve Service out."""

from __future__ import annotations

import time
import uuid
from typing import Any

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from riverbed.ratelimit import RateLimiter
from riverbed.service import Service
from riverbed.settings import RedisSettings
from riverbed_contracts.generate import asyncapi_document
from riverbed_gateway import api, inbound, metrics, problems
from riverbed_gateway.auth import KeyStore
from riverbed_gateway.backpressure import Backpressure
from riverbed_gateway.idempotency import IdempotencyStore
from riverbed_gateway.settings import GatewaySettings

log = structlog.get_logger("riverbed_gateway.access")


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
        request_id = given if _sane_request_id(given) else uuid.uuid4().hex
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
            metrics.REQUESTS.labels(template, str(status)).inc()
            metrics.REQUEST_SECONDS.labels(template).observe(elapsed)
            log.info(
                "request",
                method=scope["method"],
                path=template,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                request_id=request_id,
            )


def _sane_request_id(value: str) -> bool:
    return 0 < len(value) <= 128 and value.isascii() and value.isprintable()


def create_gateway(
    settings: GatewaySettings, *, redis_settings: RedisSettings | None = None
) -> Service:
    app = FastAPI(
        title="Riverbed gateway",
        version="1",
        description="Authenticated, validated, idempotent ingestion of events into Redis Streams.",
    )
    service = Service(settings, redis_settings=redis_settings, app=app)

    def redis() -> Any:
        return service.redis

    backpressure = Backpressure(redis, settings)
    app.state.backpressure = backpressure  # reachable by tests and operators' tooling
    ingestion = api.Ingestion(
        settings,
        redis,
        KeyStore(redis, settings),
        IdempotencyStore(
            redis, window_s=settings.idempotency_ttl_s, in_flight_s=settings.in_flight_ttl_s
        ),
        RateLimiter(redis, per_second=settings.rate_limit_per_s, burst=settings.rate_limit_burst),
        backpressure,
    )
    app.include_router(api.router(ingestion))
    app.include_router(inbound.router(inbound.InboundPayments(settings, redis, ingestion)))

    @app.get("/asyncapi", tags=["contracts"], summary="AsyncAPI document of every stream")
    async def asyncapi() -> dict[str, Any]:
        """Read-only: the streams and event types this gateway accepts, as AsyncAPI 3.0."""
        return asyncapi_document()

    problems.install(app)
    app.add_middleware(AccessLog)
    return service
