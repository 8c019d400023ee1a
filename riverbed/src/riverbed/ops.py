"""The operational HTTP surface every service serves on its port.

``/healthz``: the process is alive (200 as long as the event loop answers).
``/readyz``: Redis answers and every consumer loop is running (else 503 with why).
``/metrics``: Prometheus text format; stream gauges are sampled just before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = structlog.get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[tuple[bool, str]]]


def ops_router(
    checks: Sequence[tuple[str, ReadinessCheck]],
    before_scrape: Callable[[], Awaitable[None]] | None = None,
) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: Redis reachable and every consumer running",
        responses={503: {"description": "not ready: which check failed and why"}},
    )
    async def readyz() -> JSONResponse:
        results: dict[str, Any] = {}
        ready = True
        for name, check in checks:
            try:
                ok, detail = await check()
            except Exception as error:
                ok, detail = False, f"{type(error).__name__}: {error}"
            results[name] = {"ok": ok, "detail": detail}
            ready = ready and ok
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": results},
            status_code=200 if ready else 503,
        )

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        if before_scrape is not None:
            try:
                await before_scrape()
            except Exception as error:
                log.warning("stream sampling failed before scrape", error=str(error))
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router
