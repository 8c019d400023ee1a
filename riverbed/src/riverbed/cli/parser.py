"""The ``riverbed`` command line: every command, its arguments, and the function it runs.

Each subcommand sets ``run`` to its ``cmd_*`` coroutine; :func:`riverbed.cli.app.main`
calls it. ``--json`` and ``--redis-url`` are accepted before or after the command.
"""

from __future__ import annotations

import argparse
from typing import Any

from riverbed.cli.dlq import cmd_dlq_list, cmd_dlq_purge, cmd_dlq_replay, cmd_dlq_show
from riverbed.cli.publish import cmd_publish
from riverbed.cli.schedules import (
    cmd_schedules_list,
    cmd_schedules_pause,
    cmd_schedules_remove,
    cmd_schedules_show,
    cmd_schedules_upsert,
)
from riverbed.cli.streams import cmd_streams, cmd_tail
from riverbed_contracts.registry import REGISTRY


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON on stdout"
    )
    common.add_argument(
        "--redis-url",
        default=argparse.SUPPRESS,
        help="Redis to inspect (default: REDIS_URL, as the services use)",
    )
    parser = argparse.ArgumentParser(
        prog="riverbed",
        description="Operate Riverbed's Redis streams: inspect, tail, dead letters, test events.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_stream_commands(commands, common)
    _add_dlq_commands(commands, common)
    _add_publish_command(commands, common)
    _add_schedule_commands(commands, common)
    return parser


# ``commands`` is argparse's private _SubParsersAction, hence ``Any`` below


def _add_stream_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    streams = commands.add_parser(
        "streams", parents=[common], help="streams, groups (lag, pending), consumers (idle)"
    )
    streams.add_argument("stream", nargs="*", help="logical streams (default: every one found)")
    streams.set_defaults(run=cmd_streams)

    tail = commands.add_parser("tail", parents=[common], help="the newest events of a stream")
    tail.add_argument("stream", help="logical stream, e.g. email.requested")
    tail.add_argument("-n", "--count", type=int, default=10, help="how many (default 10)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    tail.add_argument("--limit", type=int, help="with --follow: stop after this many events")
    tail.set_defaults(run=cmd_tail)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters")
    group.add_argument("--type", help="event type, shell-style pattern: 'email.*'")
    group.add_argument("--error", help="text in the error type or message (any case)")
    group.add_argument("--reason", help="the consumer's reason: permanent, exhausted, invalid…")
    group.add_argument("--since", help="dead-lettered at or after: ISO 8601, or an age (2h, 7d)")
    group.add_argument("--until", help="dead-lettered at or before: ISO 8601, or an age")


def _add_dlq_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    dlq = commands.add_parser("dlq", help="dead-lettered entries of a stream")
    actions = dlq.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", parents=[common], help="dead-lettered entries, filtered")
    listing.add_argument("stream")
    listing.add_argument("--limit", type=int, default=100, help="rows shown (default 100)")
    _add_filters(listing)
    listing.set_defaults(run=cmd_dlq_list)

    show = actions.add_parser("show", parents=[common], help="one entry with its event in full")
    show.add_argument("stream")
    show.add_argument("entry_id", help="its id in the dead-letter stream")
    show.set_defaults(run=cmd_dlq_show)

    for name, run, text in (
        ("replay", cmd_dlq_replay, "put entries back onto their stream (same event id)"),
        ("purge", cmd_dlq_purge, "delete entries for good (asks first; --yes does not)"),
    ):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("stream")
        action.add_argument("ids", nargs="*", metavar="ENTRY_ID", help="dead-letter entry ids")
        action.add_argument("--all", action="store_true", help="every entry matching the filters")
        action.add_argument("--dry-run", action="store_true", help="show what would be done")
        if name == "purge":
            action.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        _add_filters(action)
        action.set_defaults(run=run)


def _add_publish_command(commands: Any, common: argparse.ArgumentParser) -> None:
    publish = commands.add_parser("publish", parents=[common], help="publish a test event")
    publish.add_argument("type", help=f"event type: {', '.join(REGISTRY)}")
    publish.add_argument(
        "--data", help="payload as JSON, or @file (default: the contract's example)"
    )
    publish.add_argument("--subject", help="CloudEvents subject")
    publish.add_argument("--source", default="urn:riverbed:cli", help="CloudEvents source")
    publish.add_argument("--stream", help="another stream than the type's (tests, staging)")
    publish.add_argument("--count", type=int, default=1, help="events to publish (fresh ids)")
    publish.set_defaults(run=cmd_publish)


def _add_schedule_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    schedules = commands.add_parser("schedules", help="recurring schedules of events")
    verbs = schedules.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = verbs.add_parser("list", parents=[common], help="every schedule, its next fire")
    listing.set_defaults(run=cmd_schedules_list)
    show = verbs.add_parser("show", parents=[common], help="one schedule in full")
    show.add_argument("name")
    show.set_defaults(run=cmd_schedules_show)
    _add_upsert_command(verbs, common)
    for verb, text in (
        ("pause", "stop firing until resumed"),
        ("resume", "fire again, from the next occurrence after now (no catch-up)"),
    ):
        action = verbs.add_parser(verb, parents=[common], help=text)
        action.add_argument("name")
        action.set_defaults(run=cmd_schedules_pause)
    remove = verbs.add_parser("remove", parents=[common], help="delete a schedule")
    remove.add_argument("name")
    remove.set_defaults(run=cmd_schedules_remove)


def _add_upsert_command(verbs: Any, common: argparse.ArgumentParser) -> None:
    upsert = verbs.add_parser(
        "upsert",
        parents=[common],
        help="create or change a schedule (the same definition again changes nothing)",
    )
    upsert.add_argument("name", help="letters, digits, '.', '_' or '-' (up to 100)")
    rule = upsert.add_mutually_exclusive_group(required=True)
    rule.add_argument("--cron", help="five cron fields, e.g. '0 8 * * *', or @daily, @hourly…")
    rule.add_argument("--every", type=int, metavar="SECONDS", help="a fixed interval, seconds")
    upsert.add_argument("--tz", help="IANA time zone of --cron, e.g. Europe/Berlin (default UTC)")
    upsert.add_argument("--type", required=True, help=f"event type: {', '.join(REGISTRY)}")
    upsert.add_argument("--data", required=True, help="the event's data as JSON, or @file")
    upsert.add_argument("--subject", help="CloudEvents subject of each event")
    upsert.add_argument(
        "--source", help="CloudEvents source (default urn:riverbed:schedule:<name>)"
    )
    upsert.add_argument("--start", help="first possible occurrence, ISO 8601 with an offset")
    upsert.add_argument("--end", help="last possible occurrence, ISO 8601 with an offset")
    upsert.add_argument("--limit", type=int, help="occurrences to publish, then stop")
    upsert.set_defaults(run=cmd_schedules_upsert)
