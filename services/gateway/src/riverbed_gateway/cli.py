"""``riverbed-gateway``: serve (no arguments, or ``serve``), or manage API keys.

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
import gc
import json
import sys
from collections.abc import Sequence
from typing import Final, TypeVar

from riverbed import eventloop
from riverbed.connection import redis_connection
from riverbed.entrypoint import Command, service_main
from riverbed.settings import RedisSettings
from riverbed_gateway.adapters.redis_key_store import KeyStore
from riverbed_gateway.bootstrap import create_service
from riverbed_gateway.domain.api_keys import (
    ApiKey,
    KeyConfigurationError,
    ScopeError,
    configured_keys,
    scopes_help,
)
from riverbed_gateway.settings import GatewaySettings

T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return service_main(
            argv,
            prog="riverbed-gateway",
            description=__doc__.split("\n")[0],
            serve=lambda: _fewer_collections(create_service(GatewaySettings())),
            commands=[
                Command(
                    "keys",
                    "manage API keys",
                    run=lambda arguments: eventloop.run(_keys(arguments)),
                    add_arguments=_keys_arguments,
                )
            ],
        )
    except KeyConfigurationError as error:
        # the configuration is wrong, not the code: the message, without a traceback
        given = sys.argv[1:] if argv is None else list(argv)
        serving = not given or given[0] == "serve"
        doing = "refusing to start" if serving else "configuration"
        print(f"riverbed-gateway: {doing}: {error}", file=sys.stderr)
        return 2


#: the garbage collector's thresholds while serving (CPython's default: 700, 10, 10). A batch
#: request allocates some 30 tracked objects an event, ~3,000 a request: at 700 allocations
#: the youngest generation was collected several times a request, each collection walking
#: the live objects of every request in flight, and promoting them to be walked again.
#: Measured (bench, batches of 100): collections took 3.3 µs an event, 1.7 µs at 10,000;
#: gateway CPU an event -15 to -20 %. Garbage is still collected, in fewer, larger passes.
_GC_THRESHOLDS: Final = (10_000, 10, 10)


def _fewer_collections(service: T) -> T:
    """``service``, with the collector set for serving (:data:`_GC_THRESHOLDS`): only when
    the gateway serves, never for the key commands or a process that imports it."""
    gc.set_threshold(*_GC_THRESHOLDS)
    return service


def _keys_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("name", help="a name for the key: letters, digits, '.', '_' or '-'")
    create.add_argument(
        "--scope",
        action="append",
        default=[],
        help="public event-type pattern it may publish (repeatable, at least one), e.g. "
        "'email.*' or 'payment.succeeded.v1'; '*' for every public type",
    )
    listing = actions.add_parser("list", help="list keys (names, ids and scopes)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    revoke = actions.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")


async def _keys(arguments: argparse.Namespace) -> int:
    settings = GatewaySettings()
    configured = configured_keys(settings)  # their names are taken
    async with redis_connection(RedisSettings()) as redis:
        store = KeyStore(redis, configured, cache_s=settings.key_cache_s)
        if arguments.action == "create":
            return await _create(store, arguments.name, arguments.scope)
        if arguments.action == "list":
            _print_keys(await store.list(), as_json=arguments.json)
        elif not await store.revoke(arguments.name):
            print(f"no API key named {arguments.name!r}", file=sys.stderr)
            return 1
        else:
            print(f"revoked {arguments.name!r}", file=sys.stderr)
    return 0


async def _create(store: KeyStore, name: str, scopes: list[str]) -> int:
    if not _valid_name(name):
        print(f"invalid key name {name!r}: use letters, digits, '.', '_' or '-'", file=sys.stderr)
        return 2
    if not scopes:
        print(f"give the key's scopes with --scope; {scopes_help()}", file=sys.stderr)
        return 2
    try:
        presented, key = await store.create(name, scopes)
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
    return 0


def _print_keys(found: list[ApiKey], *, as_json: bool) -> None:
    if as_json:
        listed = [{"name": k.name, "id": k.id, "scopes": list(k.scopes)} for k in found]
        print(json.dumps(listed))
    else:
        for key in found:
            print(f"{key.name}\t{key.id}\t{','.join(key.scopes)}")


def _valid_name(name: str) -> bool:
    return 0 < len(name) <= 64 and all(c.isalnum() or c in "._-" for c in name)
