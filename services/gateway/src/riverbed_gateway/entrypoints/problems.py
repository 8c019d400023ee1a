"""The gateway's problem details: the runtime's, with every refusal counted by reason, and
clients that went away counted as such."""

from __future__ import annotations

from typing import Any, Final

import structlog
from fastapi import FastAPI, Request, Response
from starlette.requests import ClientDisconnect

from riverbed import problems
from riverbed.problems import PROBLEM_JSON, Problem, field_errors
from riverbed_gateway import metrics

__all__ = [
    "CLIENT_CLOSED_REQUEST",
    "ERRORS",
    "PROBLEM_JSON",
    "Problem",
    "client_gone",
    "field_errors",
    "install",
    "problem_responses",
]

log = structlog.get_logger(__name__)

#: the status a request is counted with when its client disconnected before it was read:
#: nginx's 499 "client closed request". Never sent (nobody is listening): it labels the
#: access log and riverbed_gateway_requests_total, and keeps such requests out of the 5xx
CLIENT_CLOSED_REQUEST: Final = 499


def client_gone(method: str, path: str) -> Response:
    """What a request whose client disconnected mid-request answers: logged at info (the
    client's doing, not a fault: no traceback), counted as 499."""
    log.info("client disconnected before the request was read", method=method, path=path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


def install(app: FastAPI) -> problems.Responder:
    respond = problems.install(
        app,
        on_problem=lambda problem: metrics.REJECTED.labels(problem.reason).inc(),
        unavailable_detail="the event store cannot be reached; nothing was published; retry later",
    )

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _error: ClientDisconnect) -> Response:
        route = request.scope.get("route")
        return client_gone(request.method, getattr(route, "path", None) or "unmatched")

    return respond


#: a problem document as the OpenAPI document shows it
_PROBLEM_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries: each status answered with a problem document."""
    return {
        status: {
            "description": "problem details (RFC 9457)",
            "content": {PROBLEM_JSON: {"schema": dict(_PROBLEM_SCHEMA)}},
        }
        for status in statuses
    }


#: every status any route refuses with, as documented responses (descriptions overridable)
ERRORS: Final = problem_responses(400, 401, 403, 409, 413, 415, 422, 429, 503)
