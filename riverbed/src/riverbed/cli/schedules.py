"""``riverbed schedules list|show|upsert|pause|resume|remove``: recurring events.

The schedules live in Redis (:class:`riverbed.schedules.ScheduleStore`); the schedulers in
the services fire them. These commands only read and change the stored definitions.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from riverbed import keys
from riverbed.cli.render import print_json, print_table
from riverbed.cli.usage import UsageError, event_data
from riverbed.connection import Redis
from riverbed.schedules import (
    ScheduleDefinition,
    ScheduleError,
    ScheduleStore,
    ScheduleView,
    check_name,
    parse_time,
)


def _rule(schedule: dict[str, Any]) -> str:
    if schedule.get("cron"):
        return f"{schedule['cron']} ({schedule['tz']})"
    if schedule.get("every_s"):
        return f"every {schedule['every_s']}s"
    return "?"


def _schedule_line(view: ScheduleView) -> str:
    document = view.as_json()
    upcoming = document.get("next_fire") or "-"
    return f"{view.status}; next fire {upcoming}; publishes onto {keys.stream_key(view.stream)}"


async def cmd_schedules_list(
    redis: Redis, args: argparse.Namespace, out: Console, err: Console
) -> int:
    views = await ScheduleStore(redis).list()
    if args.json:
        print_json(out, {"schedules": [v.as_json() for v in views]})
        return 0
    if not views:
        out.print("no schedules (riverbed schedules upsert NAME … creates one)")
        return 0
    table = Table(title="schedules", title_justify="left")
    for column in ("name", "status", "rule", "type", "next fire", "last fire", "fired", "skipped"):
        table.add_column(column, justify="right" if column in ("fired", "skipped") else "left")
    for view in views:
        document = view.as_json()
        status: str = view.status
        if status in ("missing", "moving"):
            status = f"[yellow]{status}[/]"  # an interrupted write: upsert or remove fixes it
        table.add_row(
            escape(view.name),
            status,
            escape(_rule(document)),
            escape(document.get("type", "?")),
            document.get("next_fire") or "-",
            document.get("last_fire") or "-",
            str(document.get("fired", 0)),
            str(document.get("misfires_skipped", 0)),
        )
    print_table(out, table)
    if any(v.status in ("missing", "moving") for v in views):
        out.print(
            "[yellow]missing/moving: a change was interrupted; these fire nothing until "
            "'riverbed schedules upsert' (or remove) is run for them again[/]"
        )
    return 0


def _unknown_schedule(name: str) -> UsageError:
    return UsageError(f"no schedule named {name!r}; 'riverbed schedules list' shows them")


async def cmd_schedules_show(
    redis: Redis, args: argparse.Namespace, out: Console, err: Console
) -> int:
    view = await ScheduleStore(redis).get(_schedule_name(args.name))
    if view is None:
        raise _unknown_schedule(args.name)
    if args.json:
        print_json(out, view.as_json())
    else:
        out.print_json(data=view.as_json())
    return 0


def _schedule_name(name: str) -> str:
    try:
        return check_name(name)
    except ScheduleError as error:
        raise UsageError(str(error)) from None


def _bound(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value, what=option)
    except ScheduleError as error:
        raise UsageError(str(error)) from None


async def cmd_schedules_upsert(
    redis: Redis, args: argparse.Namespace, out: Console, err: Console
) -> int:
    try:
        definition = ScheduleDefinition(
            name=_schedule_name(args.name),
            type=args.type,
            data=event_data(args),
            cron=args.cron,
            tz=args.tz,
            every_s=args.every,
            subject=args.subject,
            source=args.source,
            start_ms=_bound(args.start, "--start"),
            end_ms=_bound(args.end, "--end"),
            limit=args.limit,
        )
        upserted = await ScheduleStore(redis).upsert(definition)
    except ScheduleError as error:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors)
        raise UsageError(f"{error}{': ' + details if details else ''}") from None
    if args.json:
        print_json(out, {"outcome": upserted.outcome, "schedule": upserted.schedule.as_json()})
    else:
        out.print(
            f"{upserted.outcome} schedule {escape(args.name)}: {_schedule_line(upserted.schedule)}"
        )
    return 0


async def cmd_schedules_pause(
    redis: Redis, args: argparse.Namespace, out: Console, err: Console
) -> int:
    store = ScheduleStore(redis)
    name = _schedule_name(args.name)
    view = await (store.pause(name) if args.action == "pause" else store.resume(name))
    if view is None:
        raise _unknown_schedule(args.name)
    if args.json:
        print_json(out, view.as_json())
    else:
        out.print(f"schedule {escape(args.name)}: {_schedule_line(view)}")
    return 0


async def cmd_schedules_remove(
    redis: Redis, args: argparse.Namespace, out: Console, err: Console
) -> int:
    if not await ScheduleStore(redis).remove(_schedule_name(args.name)):
        raise _unknown_schedule(args.name)
    if args.json:
        print_json(out, {"removed": args.name})
    else:
        out.print(f"removed schedule {escape(args.name)}; it fires no more")
    return 0
