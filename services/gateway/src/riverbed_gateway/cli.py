"""``riverbed-gateway``: serve (no arguments), or manage API keys.

    riverbed-gateway keys create NAME [--scope PATTERN ...]   prints the key once
    riverbed-gateway keys list                                 names and scopes, never keys
    riverbed-gateway keys revoke NAME

Keys go to the Redis at ``REDIS_URL``; a running gateway sees a change within
``GATEWAY_KEY_CACHE_S`` seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from riverbed import eventloop
from riverbed.connection import redis_connection
from riverbed.settings import RedisSettings
from riverbed_gateway.app import create_gateway
from riverbed_gateway.auth import KeyStore
from riverbed_gateway.settings import GatewaySettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="riverbed-gateway", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command")
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    create = keys.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("name", help="a name for the key: letters, digits, '.', '_' or '-'")
    create.add_argument(
        "--scope",
        action="append",
        default=[],
        help="event-type pattern it may publish (repeatable; default '*'), e.g. 'email.*'",
    )
    listing = keys.add_parser("list", help="list keys (names and scopes)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    revoke = keys.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")
    return parser


async def _keys(arguments: argparse.Namespace) -> int:
    settings = GatewaySettings()
    async with redis_connection(RedisSettings()) as redis:
        store = KeyStore(lambda: redis, settings)
        if arguments.action == "create":
            if not _valid_name(arguments.name):
                print(
                    f"invalid key name {arguments.name!r}: use letters, digits, '.', '_' or '-'",
                    file=sys.stderr,
                )
                return 2
            try:
                presented = await store.create(arguments.name, arguments.scope)
            except ValueError as error:
                print(error, file=sys.stderr)
                return 1
            print(presented)
            print(
                f"created {arguments.name!r} with scopes {arguments.scope or ['*']}; "
                "this is the only time the key is shown",
                file=sys.stderr,
            )
        elif arguments.action == "list":
            found = await store.list()
            if arguments.json:
                print(json.dumps([{"name": k.name, "scopes": list(k.scopes)} for k in found]))
            else:
                for key in found:
                    print(f"{key.name}\t{','.join(key.scopes)}")
        elif not await store.revoke(arguments.name):
            print(f"no API key named {arguments.name!r}", file=sys.stderr)
            return 1
        else:
            print(f"revoked {arguments.name!r}", file=sys.stderr)
    return 0


def _valid_name(name: str) -> bool:
    return 0 < len(name) <= 64 and all(c.isalnum() or c in "._-" for c in name)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    if arguments.command is None:
        create_gateway(GatewaySettings()).run()
        return 0
    return eventloop.run(_keys(arguments))
