"""The admin API of recurring schedules: ``/v1/schedules``.

::

    GET    /v1/schedules                 every schedule: status, rule, next and last fire
    GET    /v1/schedules/{name}          one schedule
    PUT    /v1/schedules/{name}          create (201) or change (200) it; the same body again
                                         changes nothing (200, outcome "unchanged")
    DELETE /v1/schedules/{name}          remove it (204)
    POST   /v1/schedules/{name}:pause    stop firing until resumed
    POST   /v1/schedules/{name}:resume   fire again from the next occurrence after now

Every route needs ``Authorization: Bearer <GATEWAY_ADMIN_API_KEY>``, a key of its own:
the ingestion keys (``RIVERBED_API_KEY``, ``GATEWAY_API_KEYS``, keys in Redis) are refused
with 401, because a schedule publishes events of any type, forever. Without
``GATEWAY_ADMIN_API_KEY`` the routes are not served: every ``/v1/schedules`` path answers
503 naming the setting (and none is in the OpenAPI document).

Refusals are problem documents: 422 for a definition that cannot be stored (the detail says
what is accepted: cron fields, IANA zone names, interval bounds, the known types; ``errors``
holds the data's field errors), 404 for an unknown name. The schedules themselves, and who
publishes them (the gateway runs a scheduler), are described in :mod:`riverbed.schedules`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr

from riverbed.connection import Redis
from riverbed.problems import bearer_key_check
from riverbed.schedules import (
    NAME_HELP,
    ScheduleDefinition,
    ScheduleError,
    ScheduleStore,
    ScheduleView,
    check_name,
)
from riverbed_gateway.problems import PROBLEM_JSON, Problem
from riverbed_gateway.settings import ADMIN_KEY_SETTING

Status = Literal["active", "paused", "finished", "moving", "missing"]


class ScheduleIn(BaseModel):
    """A schedule's definition: ``cron`` (with ``tz``, default UTC) or ``every_s``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "cron": "0 8 * * *",
                    "tz": "Europe/Berlin",
                    "type": "email.requested.v1",
                    "data": {
                        "to": "ops@example.com",
                        "template": "daily-digest",
                        "category": "bulk",
                        "variables": {"name": "Ops"},
                    },
                }
            ]
        },
    )

    type: str = Field(min_length=1, description="CloudEvents type of each event")
    data: dict[str, Any] = Field(description="the events' data, checked against the type")
    cron: str | None = Field(
        default=None, max_length=200, description="five cron fields, or @daily, @hourly…"
    )
    tz: str | None = Field(
        default=None, max_length=100, description="IANA zone of the cron (default UTC)"
    )
    every_s: int | None = Field(default=None, description="a fixed interval, whole seconds")
    subject: str | None = Field(default=None, min_length=1, max_length=1024)
    source: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="CloudEvents source (default urn:riverbed:schedule:<name>)",
    )
    start: AwareDatetime | None = Field(default=None, description="first possible occurrence")
    end: AwareDatetime | None = Field(default=None, description="last possible occurrence")
    limit: int | None = Field(default=None, description="occurrences to publish, then stop")


class ScheduleOut(BaseModel):
    """A schedule as stored, with its progress. Times are RFC 3339, UTC."""

    name: str
    stream: str = Field(description="the logical stream its events go to")
    status: Status = Field(
        description="missing/moving: a change was interrupted; upsert or remove again"
    )
    type: str | None = None
    cron: str | None = None
    tz: str | None = None
    every_s: int | None = None
    data: dict[str, Any] | None = None
    subject: str | None = None
    source: str | None = None
    start: str | None = None
    end: str | None = None
    limit: int | None = None
    paused: bool | None = None
    next_fire: str | None = Field(default=None, description="null unless active")
    last_fire: str | None = None
    last_entry_id: str | None = None
    fired: int | None = Field(default=None, description="occurrences published")
    misfires_skipped: int | None = Field(
        default=None, description="due occurrences skipped after downtime (misfire rule)"
    )
    created: str | None = None
    updated: str | None = None
    moving_to: str | None = None

    @classmethod
    def of(cls, view: ScheduleView) -> ScheduleOut:
        return cls(**view.as_json())


class ScheduleList(BaseModel):
    schedules: list[ScheduleOut]


class Upserted(BaseModel):
    outcome: Literal["created", "updated", "unchanged"]
    schedule: ScheduleOut


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    schema = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
        },
        "required": ["type", "title", "status", "detail"],
    }
    return {
        code: {
            "description": "problem details (RFC 9457)",
            "content": {PROBLEM_JSON: {"schema": schema}},
        }
        for code in statuses
    }


def _name(name: str) -> str:
    try:
        return check_name(name)
    except ScheduleError as error:
        raise _invalid(error) from None


ScheduleName = Annotated[str, Path(description=f"the schedule's name: {NAME_HELP}")]


def _invalid(error: ScheduleError) -> Problem:
    extra: dict[str, Any] = {"errors": error.errors} if error.errors else {}
    return Problem(422, "invalid-schedule", "Invalid schedule", str(error), **extra)


def _not_found(name: str) -> Problem:
    return Problem(
        404,
        "not-found",
        "Schedule not found",
        f"no schedule named {name!r}; GET /v1/schedules lists them",
    )


def router(admin_api_key: SecretStr | None, redis: Callable[[], Redis]) -> APIRouter:
    """The schedules routes, behind ``admin_api_key``; without one, a 503 naming the
    setting for every schedules path (and nothing in the OpenAPI document)."""
    if admin_api_key is None:
        return _disabled()
    authorized = bearer_key_check(admin_api_key.get_secret_value(), setting=ADMIN_KEY_SETTING)
    api = APIRouter(prefix="/v1/schedules", tags=["schedules"], dependencies=[Depends(authorized)])

    def store() -> ScheduleStore:
        return ScheduleStore(redis())

    @api.post(
        "/{name}:pause",
        summary="Stop firing until resumed",
        responses=_problems(401, 404, 422, 503),
    )
    async def pause(name: ScheduleName) -> ScheduleOut:
        view = await store().pause(_name(name))
        if view is None:
            raise _not_found(name)
        return ScheduleOut.of(view)

    @api.post(
        "/{name}:resume",
        summary="Fire again, from the next occurrence after now (no catch-up)",
        responses=_problems(401, 404, 422, 503),
    )
    async def resume(name: ScheduleName) -> ScheduleOut:
        view = await store().resume(_name(name))
        if view is None:
            raise _not_found(name)
        return ScheduleOut.of(view)

    @api.get("", summary="Every schedule", responses=_problems(401, 503))
    async def list_schedules() -> ScheduleList:
        return ScheduleList(schedules=[ScheduleOut.of(v) for v in await store().list()])

    @api.get("/{name}", summary="One schedule", responses=_problems(401, 404, 422, 503))
    async def get_schedule(name: ScheduleName) -> ScheduleOut:
        view = await store().get(_name(name))
        if view is None:
            raise _not_found(name)
        return ScheduleOut.of(view)

    @api.put(
        "/{name}",
        summary="Create or change a schedule (the same definition again changes nothing)",
        responses={
            201: {"model": Upserted, "description": "created"},
            **_problems(400, 401, 422, 503),
        },
    )
    async def put_schedule(name: ScheduleName, body: ScheduleIn, response: Response) -> Upserted:
        try:
            definition = ScheduleDefinition(
                name=_name(name),
                type=body.type,
                data=body.data,
                cron=body.cron,
                tz=body.tz,
                every_s=body.every_s,
                subject=body.subject,
                source=body.source,
                start_ms=_ms(body.start),
                end_ms=_ms(body.end),
                limit=body.limit,
            )
            upserted = await store().upsert(definition)
        except ScheduleError as error:
            raise _invalid(error) from None
        if upserted.outcome == "created":
            response.status_code = status.HTTP_201_CREATED
        return Upserted(outcome=upserted.outcome, schedule=ScheduleOut.of(upserted.schedule))

    @api.delete(
        "/{name}",
        status_code=status.HTTP_204_NO_CONTENT,
        summary="Remove a schedule: it fires no more",
        responses=_problems(401, 404, 422, 503),
    )
    async def delete_schedule(name: ScheduleName) -> Response:
        if not await store().remove(_name(name)):
            raise _not_found(name)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return api


def _ms(moment: AwareDatetime | None) -> int | None:
    return None if moment is None else round(moment.timestamp() * 1000)


def _disabled() -> APIRouter:
    api = APIRouter()

    @api.api_route(
        "/v1/schedules{rest:path}",
        methods=["GET", "PUT", "POST", "DELETE"],
        include_in_schema=False,
    )
    async def disabled(rest: str) -> None:
        raise Problem(
            503,
            "api-disabled",
            "Schedules API disabled",
            f"the schedules admin API needs a key of its own: set {ADMIN_KEY_SETTING} "
            "(the ingestion API keys are not accepted here)",
        )

    return api
