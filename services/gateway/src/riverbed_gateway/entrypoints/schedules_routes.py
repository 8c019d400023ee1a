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
holds the data's field errors), 404 for an unknown name
(:mod:`riverbed_gateway.service_layer.schedules_admin`). The schedules themselves, and who
publishes them (the gateway runs a scheduler), are described in :mod:`riverbed.schedules`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Path, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr

from riverbed.problems import Problem, bearer_key_check
from riverbed.schedules import NAME_HELP, ScheduleView
from riverbed_gateway.entrypoints.dependencies import SchedulesAdminDep
from riverbed_gateway.entrypoints.problems import problem_responses
from riverbed_gateway.service_layer.schedules_admin import SchedulesAdmin
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


ScheduleName = Annotated[str, Path(description=f"the schedule's name: {NAME_HELP}")]


def router(admin_api_key: SecretStr | None) -> APIRouter:
    """The schedules routes, behind ``admin_api_key``; without one, a 503 naming the
    setting for every schedules path (and nothing in the OpenAPI document)."""
    if admin_api_key is None:
        return _disabled()
    authorized = bearer_key_check(admin_api_key.get_secret_value(), setting=ADMIN_KEY_SETTING)
    api = APIRouter(prefix="/v1/schedules", tags=["schedules"], dependencies=[Depends(authorized)])
    _pause_and_resume(api)

    @api.get("", summary="Every schedule", responses=problem_responses(401, 503))
    async def list_schedules(admin: SchedulesAdminDep) -> ScheduleList:
        return ScheduleList(schedules=[ScheduleOut.of(v) for v in await admin.list()])

    @api.get("/{name}", summary="One schedule", responses=problem_responses(401, 404, 422, 503))
    async def get_schedule(name: ScheduleName, admin: SchedulesAdminDep) -> ScheduleOut:
        return ScheduleOut.of(await admin.get(name))

    @api.put(
        "/{name}",
        summary="Create or change a schedule (the same definition again changes nothing)",
        responses={
            201: {"model": Upserted, "description": "created"},
            **problem_responses(400, 401, 422, 503),
        },
    )
    async def put_schedule(
        name: ScheduleName, body: ScheduleIn, response: Response, admin: SchedulesAdminDep
    ) -> Upserted:
        upserted = await admin.upsert(
            name,
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
        if upserted.outcome == "created":
            response.status_code = status.HTTP_201_CREATED
        return Upserted(outcome=upserted.outcome, schedule=ScheduleOut.of(upserted.schedule))

    @api.delete(
        "/{name}",
        status_code=status.HTTP_204_NO_CONTENT,
        summary="Remove a schedule: it fires no more",
        responses=problem_responses(401, 404, 422, 503),
    )
    async def delete_schedule(name: ScheduleName, admin: SchedulesAdminDep) -> Response:
        await admin.remove(name)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return api


#: the actions on one schedule: what each does, and which the admin use case takes
_ACTIONS: Final = (
    ("pause", "Stop firing until resumed"),
    ("resume", "Fire again, from the next occurrence after now (no catch-up)"),
)


def _pause_and_resume(api: APIRouter) -> None:
    """``POST /{name}:pause`` and ``:resume``, first: ``/{name}`` would take them as names."""
    for action, summary in _ACTIONS:
        api.add_api_route(
            f"/{{name}}:{action}",
            _action(action),
            methods=["POST"],
            name=action,
            summary=summary,
            responses=problem_responses(401, 404, 422, 503),
        )


def _action(action: str) -> Callable[[str, SchedulesAdmin], Awaitable[ScheduleOut]]:
    async def act(name: ScheduleName, admin: SchedulesAdminDep) -> ScheduleOut:
        change = admin.pause if action == "pause" else admin.resume
        return ScheduleOut.of(await change(name))

    return act


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
