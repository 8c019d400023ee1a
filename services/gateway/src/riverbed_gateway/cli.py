"""``riverbed-gateway``: serve (no arguments), or manage API keys.

    riverbed-gateway keys create NAME --scope PATTERN [--scope PATTERN ...]   prints the key once
    riverbed-gateway keys list                        names, ids and scopes, never keys
    riverbed-gateway keys revoke NAME

Keys go to the Redis at ``REDIS_URL``; a running gateway sees a change within
``GATEWAY_KEY_CACHE_S`` seconds. A key gets the scopes it is given and no default: each a
pattern of public event types (``payment.*``, ``email.requested.v1``, ``*`` for all). A name
used by another key is refused: in Redis, ``local`` (``RIVERBED_API_KEY``'s), and the names
in ``GATEWAY_API_KEYS`` when it is set (run it with the gateway's environment; a gateway
refuses to start on a clash it did not see).

Serving, the configured keys are checked first: clashing names or secrets, or a scope no
public type matches, stop it with exit code 2 and a message naming the clash.
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
from riverbed_gateway.auth import KeyConfigurationError, KeyStore, ScopeError, scopes_help
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
        help="public event-type pattern it may publish (repeatable, at least one), e.g. "
        "'email.*' or 'payment.succeeded.v1'; '*' for every public type",
    )
    listing = keys.add_parser("list", help="list keys (names, ids and scopes)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    revoke = keys.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")
    return parser


async def _keys(arguments: argparse.Namespace) -> int:
    settings = GatewaySettings()
    async with redis_connection(RedisSettings()) as redis:
        store = KeyStore(lambda: redis, settings)  # the configured keys: their names are taken
        if arguments.action == "create":
            if not _valid_name(arguments.name):
                print(
                    f"invalid key name {arguments.name!r}: use letters, digits, '.', '_' or '-'",
                    file=sys.stderr,
                )
                return 2
            if not arguments.scope:
                print(f"give the key's scopes with --scope; {scopes_help()}", file=sys.stderr)
                return 2
            try:
                presented, key = await store.create(arguments.name, arguments.scope)
            except ScopeError as error:
                print(error, file=sys.stderr)
                return 2
            except ValueError as error:
                print(error, file=sys.stderr)
                return 1
            print(presented)
            print(
                f"created {key.name!r} (id {key.id}) with scopes {list(key.scopes)}; "
                "this is the only time the key is shown",
                file=sys.stderr,
            )
        elif arguments.action == "list":
            found = await store.list()
            if arguments.json:
                listed = [{"name": k.name, "id": k.id, "scopes": list(k.scopes)} for k in found]
                print(json.dumps(listed))
            else:
                for key in found:
                    print(f"{key.name}\t{key.id}\t{','.join(key.scopes)}")
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
    try:
        if arguments.command is None:
            create_gateway(GatewaySettings()).run()
            return 0
        return eventloop.run(_keys(arguments))
    except KeyConfigurationError as error:
        # the configuration is wrong, not the code: the message, without a traceback
        doing = "refusing to start" if arguments.command is None else "configuration"
        print(f"riverbed-gateway: {doing}: {error}", file=sys.stderr)
        return 2
