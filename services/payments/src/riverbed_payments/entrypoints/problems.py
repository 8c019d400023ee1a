"""The payments API's problem details: the runtime's, plus this service's own errors."""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from riverbed import problems
from riverbed.problems import Problem
from riverbed_payments.domain.reconciliation import ReportError
from riverbed_payments.service_layer.reconciliation import TooLarge

__all__ = ["Problem", "install", "problem_responses"]

#: the body of every refusal (RFC 9457), as the OpenAPI document shows it
PROBLEM_SCHEMA: Final = problems.problem_schema(
    line={"type": "integer", "description": "the report's record refused (header: 1)"}
)
#: when the API answers each status
WHEN: Final = {
    401: "no API key, or not PAYMENTS_API_KEY (the gateway's ingestion key is refused)",
    404: "no such transaction, payment or report, or no route at this path",
    413: "a report larger than PAYMENTS_REPORT_MAX_BYTES",
    415: "a report sent as another type than text/csv",
    422: "a parameter that does not match the API (errors names it), or a report that cannot "
    "be read (line names the record)",
    503: "no PAYMENTS_API_KEY configured, the service starting, or its database or Redis "
    "unreachable (Retry-After)",
}
#: OpenAPI ``responses`` entries: each status answered with a problem document
problem_responses: Final = problems.responses_for(WHEN, PROBLEM_SCHEMA)


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
