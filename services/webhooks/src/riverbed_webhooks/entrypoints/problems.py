"""The webhooks API's problem details: the runtime's, plus this service's own errors."""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from riverbed import problems
from riverbed.problems import Problem
from riverbed_webhooks.service_layer.errors import Conflict, Invalid, NotFound

__all__ = ["Problem", "install", "problem_responses"]

#: the body of every refusal (RFC 9457), as the OpenAPI document shows it
PROBLEM_SCHEMA: Final = problems.problem_schema()
#: when the API answers each status
WHEN: Final = {
    400: "a body that cannot be read as text (not UTF-8)",
    401: "no API key, or not WEBHOOKS_API_KEY (the gateway's ingestion key is refused)",
    404: "no such endpoint or delivery, or no route at this path",
    409: "the endpoint is disabled: enable it, then replay",
    422: "a parameter or body that does not match the API; errors names the fields",
    503: "no WEBHOOKS_API_KEY configured, the service starting, or its database or Redis "
    "unreachable (Retry-After)",
}
#: OpenAPI ``responses`` entries: each status answered with a problem document
problem_responses: Final = problems.responses_for(WHEN, PROBLEM_SCHEMA)


def install(app: FastAPI) -> None:
    """Every error the API can produce becomes a problem document."""
    answer = problems.install(app, unavailable=(RedisError, SQLAlchemyError))

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, error: NotFound) -> JSONResponse:
        return answer(problems.not_found(f"Unknown {error.kind}", str(error)))

    @app.exception_handler(Conflict)
    async def _conflict(_request: Request, error: Conflict) -> JSONResponse:
        return answer(Problem(409, "conflict", "Conflict", str(error)))

    @app.exception_handler(Invalid)
    async def _invalid_value(_request: Request, error: Invalid) -> JSONResponse:
        errors = [{"loc": ["body", error.field], "msg": str(error), "type": "value_error"}]
        return answer(problems.invalid_request(str(error), errors))
