"""The webhooks API's problem details: the runtime's, plus this service's own errors."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from riverbed import problems
from riverbed.problems import Problem
from riverbed_webhooks.service_layer.errors import Conflict, Invalid, NotFound

__all__ = ["Problem", "install"]


def install(app: FastAPI) -> None:
    """Every error the API can produce becomes a problem document."""
    answer = problems.install(app, unavailable=(RedisError, SQLAlchemyError))

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, error: NotFound) -> JSONResponse:
        return answer(Problem(404, "not-found", f"Unknown {error.kind}", str(error)))

    @app.exception_handler(Conflict)
    async def _conflict(_request: Request, error: Conflict) -> JSONResponse:
        return answer(Problem(409, "conflict", "Conflict", str(error)))

    @app.exception_handler(Invalid)
    async def _invalid_value(_request: Request, error: Invalid) -> JSONResponse:
        return answer(
            Problem(
                422,
                "invalid-request",
                "Invalid request",
                str(error),
                errors=[{"loc": ["body", error.field], "msg": str(error), "type": "value_error"}],
            )
        )
