"""The admin of recurring schedules (what ``/v1/schedules`` does): list, look up, create or
change, pause, resume and remove them, with refusals as problems — 422 for a name or a
definition that cannot be stored (the detail says what is accepted), 404 for an unknown
name. The schedules themselves are described in :mod:`riverbed.schedules`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from riverbed.problems import Problem
from riverbed.schedules import (
    ScheduleDefinition,
    ScheduleError,
    ScheduleView,
    Upserted,
    check_name,
)
from riverbed_gateway.service_layer.ports import Schedules


class SchedulesAdmin:
    def __init__(self, schedules: Schedules) -> None:
        self._schedules = schedules

    async def list(self) -> list[ScheduleView]:
        return await self._schedules.list()

    async def get(self, name: str) -> ScheduleView:
        return await self._named(name, self._schedules.get)

    async def pause(self, name: str) -> ScheduleView:
        return await self._named(name, self._schedules.pause)

    async def resume(self, name: str) -> ScheduleView:
        return await self._named(name, self._schedules.resume)

    async def upsert(self, name: str, **definition: Any) -> Upserted:
        """Create or change the schedule ``name`` (``definition``: the fields of
        :class:`ScheduleDefinition` but its name)."""
        try:
            return await self._schedules.upsert(
                ScheduleDefinition(name=_checked(name), **definition)
            )
        except ScheduleError as error:
            raise _invalid(error) from None

    async def remove(self, name: str) -> None:
        if not await self._schedules.remove(_checked(name)):
            raise _not_found(name)

    async def _named(
        self, name: str, action: Callable[[str], Awaitable[ScheduleView | None]]
    ) -> ScheduleView:
        view = await action(_checked(name))
        if view is None:
            raise _not_found(name)
        return view


def _checked(name: str) -> str:
    try:
        return check_name(name)
    except ScheduleError as error:
        raise _invalid(error) from None


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
