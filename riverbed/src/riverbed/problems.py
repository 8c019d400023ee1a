"""Errors of a service's HTTP API as RFC 9457 problem details (``application/problem+json``).

``{"type", "title", "status", "detail"}`` plus, where they help, members such as
``errors`` (field errors, without the echoed input: it may hold a secret or personal
data). ``install`` makes every error an app can produce one of these documents.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import structlog
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import AfterValidator
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from riverbed.errors import RiverbedError

log = structlog.get_logger(__name__)

T = TypeVar("T")

PROBLEM_JSON: Final = "application/problem+json"


def problem_schema(**extra_properties: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a refusal (RFC 9457) as an OpenAPI document shows it: the four
    standard members, field ``errors``, and any member a service adds (``extra_properties``)."""
    return {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {"type": "object"},
                "description": "field errors: loc, msg, type",
            },
            **extra_properties,
        },
        "required": ["type", "title", "status", "detail"],
    }


def problem_responses(
    when: Mapping[int, str], schema: Mapping[str, Any], *statuses: int
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries: each status answered with a problem document, described
    by ``when[status]`` (when the API answers it)."""
    return {
        status: {"description": when[status], "content": {PROBLEM_JSON: {"schema": schema}}}
        for status in statuses
    }


def responses_for(
    when: Mapping[int, str], schema: Mapping[str, Any]
) -> Callable[..., dict[int | str, dict[str, Any]]]:
    """A service's ``problem_responses(*statuses)``: :func:`problem_responses` with its own
    ``when`` (when its API answers each status) and ``schema`` bound, so that its routes
    declare their refusals by status alone."""

    def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
        return problem_responses(when, schema, *statuses)

    return responses


TYPE_BASE: Final = "https://riverbed.dev/problems/"


class Problem(RiverbedError):
    """A refusal the client can act on; ``reason`` names it (and labels metrics)."""

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
        return JSONResponse(
            self.body(), status_code=self.status, headers=self.headers, media_type=PROBLEM_JSON
        )


def field_errors(errors: list[Any], prefix: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """pydantic errors without the echoed input."""
    return [
        {"loc": [*prefix, *error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in errors
    ]


def not_found(title: str, detail: str) -> Problem:
    """The 404 of a resource the API does not have (``title``: "Unknown delivery")."""
    return Problem(404, "not-found", title, detail)


def found_or_404(value: T | None, title: str, detail: str) -> T:
    """``value``, what a route looked up; None (no such resource) answers :func:`not_found`."""
    if value is None:
        raise not_found(title, detail)
    return value


def invalid_request(detail: str, errors: list[dict[str, Any]]) -> Problem:
    """The 422 of a request that does not match the API, its field ``errors`` listed (as
    :func:`field_errors` gives them): the runtime's for what pydantic refuses, a service's
    for what its own checks refuse, in the one shape clients read."""
    return Problem(422, "invalid-request", "Invalid request", detail, errors=errors)


class Responder:
    """Renders problems (reporting each to ``on_problem``) and maps exceptions to them."""

    def __init__(
        self,
        on_problem: Callable[[Problem], None] | None,
        unavailable: tuple[type[Exception], ...],
        unavailable_detail: str,
    ) -> None:
        self.on_problem = on_problem
        self.unavailable = unavailable
        self.unavailable_detail = unavailable_detail

    def __call__(self, problem: Problem) -> JSONResponse:
        if self.on_problem is not None:
            self.on_problem(problem)
        return problem.response()

    def for_exception(self, error: Exception) -> JSONResponse:
        """What an endpoint served outside the app's handlers answers for ``error``."""
        if isinstance(error, Problem):
            return self(error)
        if isinstance(error, self.unavailable):
            return self(self.unavailable_problem(error))
        return self(unexpected_problem(error))

    def unavailable_problem(self, error: Exception) -> Problem:
        log.error("storage failed in a request", error_type=type(error).__name__, error=str(error))
        return Problem(
            503,
            "unavailable",
            "Service unavailable",
            self.unavailable_detail,
            headers={"Retry-After": "1"},
        )


def unexpected_problem(error: Exception) -> Problem:
    # a bug, not the client's doing: logged with its traceback, answered as JSON too
    log.error("unhandled error in a request", error_type=type(error).__name__, exc_info=error)
    return Problem(500, "internal-error", "Internal error", "an unexpected error; it was logged")


def install(
    app: FastAPI,
    *,
    on_problem: Callable[[Problem], None] | None = None,
    unavailable: tuple[type[Exception], ...] = (RedisError,),
    unavailable_detail: str = "a store this service needs cannot be reached; retry later",
) -> Responder:
    """Register handlers; returns the :class:`Responder` they use.

    ``on_problem`` sees every problem answered (a service counts rejections there);
    exceptions in ``unavailable`` (storage that cannot be reached) become 503s.
    """
    answer = Responder(on_problem, unavailable, unavailable_detail)

    @app.exception_handler(Problem)
    async def _problem(_request: Request, problem: Problem) -> JSONResponse:
        return answer(problem)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        errors = field_errors(list(error.errors()))
        return answer(invalid_request("the request does not match the API", errors))

    async def _unavailable(_request: Request, error: Exception) -> JSONResponse:
        return answer(answer.unavailable_problem(error))

    for exception in unavailable:
        app.add_exception_handler(exception, _unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, error: Exception) -> JSONResponse:
        return answer(unexpected_problem(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        reason = {404: "not-found", 405: "method-not-allowed"}.get(error.status_code, "http-error")
        headers = dict(error.headers or {})
        if error.status_code == 405:
            # Starlette names the methods of the first route of the path only (GET of
            # GET/PATCH/DELETE /things/{id}); RFC 9110 wants every method the path has
            headers["Allow"] = ", ".join(allowed_methods(app, request.url.path))
        return answer(
            Problem(
                error.status_code, reason, str(error.detail), str(error.detail), headers=headers
            )
        )

    return answer


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route of ``app`` serves at ``path``."""
    methods: set[str] = set()
    for route in iter_route_contexts(app.routes):
        if route.path and route.methods and compile_path(route.path)[0].match(path):
            methods |= route.methods
    return sorted(methods)


def bearer_key_check(api_key: str | None, *, setting: str) -> Callable[[Request], None]:
    """A FastAPI dependency admitting requests that present ``api_key`` as a Bearer token.

    Without a configured key the API answers 503 (naming ``setting``) rather than being
    open: a service's own HTTP API is never served unauthenticated by accident.
    """

    def authorized(request: Request) -> None:
        if api_key is None:
            raise Problem(
                503,
                "api-disabled",
                "API disabled",
                f"no API key is configured: set {setting}",
            )
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), api_key.encode()
        ):
            raise Problem(
                401,
                "unauthorized",
                "Unauthorized",
                "send Authorization: Bearer <API key>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return authorized


#: the largest row id a cursor can name: ids are signed 64-bit integers (SQLite's INTEGER,
#: PostgreSQL's BIGINT), and a larger number would overflow the database driver
MAX_ROW_ID: Final = 2**63 - 1


def row_cursor_query(low: int, meaning: str) -> Any:
    """The ``Query`` of an optional row-id cursor parameter (``?after=``, ``?before=``)
    from ``low`` to :data:`MAX_ROW_ID`, as the OpenAPI document shows it."""
    return Query(
        description=f"{meaning}: from {low} to {MAX_ROW_ID}",
        json_schema_extra={"minimum": low, "maximum": MAX_ROW_ID},
    )


def row_cursor_check(name: str, low: int, meaning: str) -> AfterValidator:
    """The check of row-id cursor parameter ``name``: out of range, a 422 whose message
    states the whole accepted range (rather than a driver's overflow, a 500). Declared with
    :func:`row_cursor_query`: ``Annotated[int | None, row_cursor_query(…), row_cursor_check(…)]``.
    """

    def check(value: int | None) -> int | None:
        if value is not None and not low <= value <= MAX_ROW_ID:
            raise ValueError(f"{name} is {meaning}: from {low} to {MAX_ROW_ID}")
        return value

    return AfterValidator(check)
