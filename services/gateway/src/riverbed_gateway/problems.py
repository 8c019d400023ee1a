"""Errors as RFC 9457 problem details: one stable JSON shape for every refusal.

``{"type", "title", "status", "detail"}`` plus, where they help, ``errors`` (field
errors), ``known_types`` or ``accepted``. Served as ``application/problem+json``.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from riverbed_gateway import metrics

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://riverbed.dev/problems/"


class Problem(Exception):
    """A refusal the client can act on; ``reason`` labels the rejections metric."""

    def __init__(
        self,
        status: int,
        reason: str,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {
            "type": TYPE_BASE + self.reason,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }

    def response(self) -> JSONResponse:
        metrics.REJECTED.labels(self.reason).inc()
        return JSONResponse(
            self.body(), status_code=self.status, headers=self.headers, media_type=PROBLEM_JSON
        )


def field_errors(errors: list[Any], prefix: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """pydantic errors without the echoed input (it may hold personal data)."""
    return [
        {"loc": [*prefix, *error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in errors
    ]


def install(app: FastAPI) -> None:
    """Every error the app can produce becomes a problem document."""

    @app.exception_handler(Problem)
    async def _problem(_request: Request, problem: Problem) -> JSONResponse:
        return problem.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        return Problem(
            422,
            "invalid-request",
            "Invalid request",
            "the request does not match the API",
            errors=field_errors(list(error.errors())),
        ).response()

    @app.exception_handler(RedisError)
    async def _redis_down(_request: Request, error: RedisError) -> JSONResponse:
        log.error(
            "Redis failed during a request", error_type=type(error).__name__, error=str(error)
        )
        return Problem(
            503,
            "unavailable",
            "Service unavailable",
            "the event store cannot be reached; nothing was published; retry later",
            headers={"Retry-After": "1"},
        ).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        reason = {404: "not-found", 405: "method-not-allowed"}.get(error.status_code, "http-error")
        return Problem(
            error.status_code,
            reason,
            str(error.detail),
            str(error.detail),
            headers=dict(error.headers or {}),
        ).response()
