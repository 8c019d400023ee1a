"""``riverbed-email``: run the service (the default), or look after the suppression list.

::

    riverbed-email                                  run the service (same as `serve`)
    riverbed-email suppressions list [--json]       every suppressed address, and why
    riverbed-email suppressions add ADDRESS [--reason TEXT]
    riverbed-email suppressions remove ADDRESS      allow sending to it again

The suppression commands use ``REDIS_URL``, as the service does; they print addresses
(that is their job) but nothing else from the list's users.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime

from riverbed.connection import redis_connection
from riverbed.entrypoint import Command, service_main
from riverbed.settings import RedisSettings
from riverbed_email.adapters.redis_stores import RedisSuppressionList
from riverbed_email.bootstrap import create_service
from riverbed_email.domain.addresses import normalize
from riverbed_email.domain.records import Suppression
from riverbed_email.settings import EmailSettings


def _suppression_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every suppressed address, and why")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    add = actions.add_parser("add", help="suppress an address (e.g. after a complaint)")
    add.add_argument("address")
    add.add_argument("--reason", default="added by an operator")
    remove = actions.add_parser("remove", help="allow sending to an address again")
    remove.add_argument("address")


def _when(at_ms: int) -> str:
    if not at_ms:
        return "-"
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).isoformat(timespec="seconds")


async def _list(store: RedisSuppressionList, as_json: bool) -> int:
    count = 0
    async for entry in store.entries():
        count += 1
        if as_json:
            print(json.dumps({**asdict(entry), "at": _when(entry.at_ms)}))
        else:
            code = entry.smtp_code if entry.smtp_code is not None else "-"
            print(f"{entry.address}\t{_when(entry.at_ms)}\t{code}\t{entry.reason}")
    if not as_json:
        print(f"{count} suppressed address(es)", file=sys.stderr)
    return 0


async def _add(store: RedisSuppressionList, address: str, reason: str) -> int:
    added = await store.add(Suppression(address, reason, at_ms=int(time.time() * 1000)))
    print(f"{address} {'suppressed' if added else 'was already suppressed'}")
    return 0


async def _remove(store: RedisSuppressionList, address: str) -> int:
    if await store.remove(address):
        print(f"{address} removed from the suppression list")
        return 0
    print(f"{address} is not on the suppression list", file=sys.stderr)
    return 1


async def _suppressions(args: argparse.Namespace) -> int:
    async with redis_connection(RedisSettings()) as redis:
        store = RedisSuppressionList(redis)
        if args.action == "list":
            return await _list(store, args.json)
        address = normalize(args.address)
        if "@" not in address:
            print(f"{args.address!r} is not an email address", file=sys.stderr)
            return 2
        if args.action == "add":
            return await _add(store, address, args.reason)
        return await _remove(store, address)


SUPPRESSIONS = Command(
    name="suppressions",
    help="list, add or remove suppressed addresses",
    run=lambda args: asyncio.run(_suppressions(args)),
    add_arguments=_suppression_arguments,
)


def main(argv: Sequence[str] | None = None) -> int:
    return service_main(
        argv,
        prog="riverbed-email",
        description="Riverbed email service: without a command, run the service.",
        serve=lambda: create_service(EmailSettings()),
        commands=[SUPPRESSIONS],
    )
