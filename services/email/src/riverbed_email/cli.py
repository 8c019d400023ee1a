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
from riverbed.settings import RedisSettings
from riverbed_email.addresses import normalize
from riverbed_email.bootstrap import create_service
from riverbed_email.ports import Suppression
from riverbed_email.settings import EmailSettings
from riverbed_email.store import RedisSuppressionList


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="riverbed-email",
        description="Riverbed email service: without a command, run the service.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="run the service (the default)")
    suppressions = commands.add_parser(
        "suppressions", help="list, add or remove suppressed addresses"
    )
    actions = suppressions.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every suppressed address, and why")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    add = actions.add_parser("add", help="suppress an address (e.g. after a complaint)")
    add.add_argument("address")
    add.add_argument("--reason", default="added by an operator")
    remove = actions.add_parser("remove", help="allow sending to an address again")
    remove.add_argument("address")
    return parser


def _when(at_ms: int) -> str:
    if not at_ms:
        return "-"
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).isoformat(timespec="seconds")


async def _suppressions(args: argparse.Namespace) -> int:
    async with redis_connection(RedisSettings()) as redis:
        store = RedisSuppressionList(lambda: redis)
        if args.action == "list":
            count = 0
            async for entry in store.entries():
                count += 1
                if args.json:
                    print(json.dumps({**asdict(entry), "at": _when(entry.at_ms)}))
                else:
                    code = entry.smtp_code if entry.smtp_code is not None else "-"
                    print(f"{entry.address}\t{_when(entry.at_ms)}\t{code}\t{entry.reason}")
            if not args.json:
                print(f"{count} suppressed address(es)", file=sys.stderr)
            return 0
        address = normalize(args.address)
        if "@" not in address:
            print(f"{args.address!r} is not an email address", file=sys.stderr)
            return 2
        if args.action == "add":
            added = await store.add(
                Suppression(address, args.reason, at_ms=int(time.time() * 1000))
            )
            print(f"{address} {'suppressed' if added else 'was already suppressed'}")
            return 0
        if await store.remove(address):
            print(f"{address} removed from the suppression list")
            return 0
        print(f"{address} is not on the suppression list", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in (None, "serve"):
        create_service(EmailSettings()).run()
        return 0
    return asyncio.run(_suppressions(args))
