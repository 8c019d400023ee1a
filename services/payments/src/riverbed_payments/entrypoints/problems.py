"""The payments API's problem details: the runtime's, plus this service's own errors."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from riverbed import problems
from riverbed.problems import Problem
from riverbed_payments.domain.reconciliation import ReportError
from riverbed_payments.service_layer.reconciliation import TooLarge

__all__ = ["Problem", "install"]


def install(app: FastAPI) -> None:
    """Every error the API can produce becomes a problem document."""
    answer = problems.install(app, unavailable=(RedisError, SQLAlchemyError))

    @app.exception_handler(ReportError)
    async def _bad_report(_request: Request, error: ReportError) -> JSONResponse:
        problem = Problem(422, "invalid-report", "Invalid settlement report", str(error))
        if error.line is not None:
            problem.extra["line"] = error.line
        return answer(problem)

    @app.exception_handler(UnicodeDecodeError)
    async def _not_utf8(_request: Request, error: UnicodeDecodeError) -> JSONResponse:
        return answer(
            Problem(422, "invalid-report", "Invalid settlement report", "the report is not UTF-8")
        )

    @app.exception_handler(TooLarge)
    async def _too_large(_request: Request, error: TooLarge) -> JSONResponse:
        return answer(Problem(413, "too-large", "Report too large", str(error)))
