"""Schemathesis against the gateway's own OpenAPI document, over real HTTP, on a real Redis.

Requests are generated from the schema the app serves, both valid and invalid ones
(schemathesis' positive and negative modes), with and without the API key, and every answer
goes through every check schemathesis has (its CLI's ``--checks all``): no 5xx; the status
code, content type, headers and body the document declares for that operation; invalid
requests refused and valid ones accepted; a missing required header refused; methods the
document does not list answered 405 with an ``Allow`` header.

The served document states the publishing bodies as exactly as JSON Schema can: one of the
public types, each with its contract as the schema of ``data``. What it cannot state is left
to the refusals documented for it, and a valid request refused for one of these reasons is
not held against the document (``BEYOND_THE_SCHEMA``): a ``deliver_at`` further ahead of now
than ``GATEWAY_MAX_DELAY_S``, an id or ``Idempotency-Key`` used before with another body, and
a provider's signature, which only the provider can make. A third test steers the inbound
provider in a copy of the document to the one configured, so that generated deliveries reach
the signature checks; its answers are checked against the served document as they are.

The gateway is served by uvicorn on a free loopback port, in a thread with its own
event loop (its Redis connections belong to that loop). What it publishes is removed
at the end: the entries it answered with, the events it kept for later (cancelled as their
owner, its API key), and the keys of its own API key.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS as ALL_CHECKS
from schemathesis.checks import load_all_checks
from schemathesis.specs.openapi.checks import positive_data_acceptance

from riverbed import keys
from riverbed.connection import redis_connection
from riverbed.delay import DelayStore
from riverbed.service import Service
from riverbed.settings import RedisSettings
from riverbed.testing import free_port, sync_redis_client
from riverbed_contracts.registry import STREAMS
from riverbed_gateway.bootstrap import create_service
from riverbed_gateway.keys import rate_limit_key, request_idempotency_key
from riverbed_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 60  # per operation and generation mode: bounded, the whole module runs in ~30 s
START_TIMEOUT_S = 15.0
INBOUND_PROVIDER = "stripe"
load_all_checks()
#: every check schemathesis has (its CLI's --checks all): conformance of status, content type,
#: headers and body to the document, no 5xx, negative data refused and positive accepted,
#: missing required headers and unsupported methods refused, auth not ignored
CHECKS = ALL_CHECKS.get_all()


class ServedGateway:
    """A started gateway behind a real uvicorn, in a thread; remembers what it published."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.key_name = f"fuzz-{secrets.token_hex(5)}"
        self.key_id = f"config:{self.key_name}"  # what the gateway keeps its state under
        self.api_key = "rbk_" + secrets.token_urlsafe(32)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service: Service = create_service(
            GatewaySettings(
                api_keys=[{"name": self.key_name, "key": self.api_key}],
                # a provider configured, so its endpoint validates instead of answering 404
                inbound_secrets={INBOUND_PROVIDER: ["whsec_" + secrets.token_hex(16)]},
                log_level="WARNING",
                log_format="json",
            ),
            redis_settings=RedisSettings(url=redis_url),
        )
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.service.app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                access_log=False,
                lifespan="off",
            )
        )
        self.thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self.published: dict[str, set[str]] = defaultdict(set)  # stream -> entry ids
        self.kept: dict[str, set[str]] = defaultdict(set)  # stream -> ids kept for later
        self.failure: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # surfaced by start() or by the tests
            self.failure = error

    async def _serve(self) -> None:
        await self.service.start()
        try:
            await self.server.serve()
        finally:
            await self.service.stop()

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the gateway did not start: {self.failure!r}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start within {START_TIMEOUT_S:g} s")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=START_TIMEOUT_S)

    def remember(self, body: Any) -> None:
        """Note the entries an accepted answer names, to delete them afterwards."""
        if not isinstance(body, dict):
            return
        for item in body.get("events", [body]):
            if isinstance(item, dict) and "stream" in item and "entry_id" in item:
                if item["entry_id"] is None:
                    self.kept[item["stream"]].add(item["event_id"])
                else:
                    self.published[item["stream"]].add(item["entry_id"])


@pytest.fixture(scope="module")
def served_gateway(redis_url: str) -> Iterator[ServedGateway]:
    client = sync_redis_client(redis_url)
    existed = {stream for stream in STREAMS if client.exists(keys.stream_key(stream))}
    gateway = ServedGateway(redis_url)
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()
        try:
            _clean_up(client, gateway, existed)
        finally:
            client.close()


def _clean_up(client: redis.Redis, gateway: ServedGateway, existed: set[str]) -> None:
    asyncio.run(_cancel_kept(gateway))
    for stream, entry_ids in gateway.published.items():
        key = keys.stream_key(stream)
        if not client.exists(key):
            continue
        client.xdel(key, *entry_ids)
        # a stream this module created, and that nothing else has used since, goes too
        if stream not in existed and client.xlen(key) == 0 and not client.xinfo_groups(key):
            client.unlink(key)
    own = [rate_limit_key(gateway.key_id)]
    own += client.scan_iter(match=request_idempotency_key(gateway.key_id, "*"))
    client.unlink(*own)


async def _cancel_kept(gateway: ServedGateway) -> None:
    """Cancel what the gateway kept for later, as the owner it kept it for."""
    redis_settings = RedisSettings(url=gateway.redis_url)
    async with redis_connection(redis_settings) as client:
        for stream, event_ids in gateway.kept.items():
            store = DelayStore(client, stream)
            for event_id in event_ids:
                await store.cancel(event_id, owner=gateway.key_id)


def _openapi_document() -> dict[str, Any]:
    """The OpenAPI document as the app builds it (routes do not depend on settings).

    Built at import from a gateway that is never started: nothing connects. (A schema
    from a fixture, ``schemathesis.pytest.from_fixture``, fails on pytest 9: schemathesis
    4.32 sets ``request.node._nodeid``, which pytest 9 no longer has.)
    """
    document: dict[str, Any] = create_service(GatewaySettings()).app.openapi()
    return document


def _steered_document() -> dict[str, Any]:
    """The served document with the inbound provider narrowed to the one configured, so that
    generated deliveries reach its signature check instead of a 404."""
    document = copy.deepcopy(_openapi_document())
    inbound = document["paths"]["/v1/inbound/payments/{provider}"]["post"]
    for parameter in inbound["parameters"]:
        if parameter["name"] == "provider":
            parameter["schema"] = {"type": "string", "enum": [INBOUND_PROVIDER]}
    return document


schema = schemathesis.openapi.from_dict(_openapi_document())
steered = schemathesis.openapi.from_dict(_steered_document()).include(path_regex="^/v1/")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_with_the_api_key_every_answer_is_documented_and_no_5xx(
    case: schemathesis.Case, served_gateway: ServedGateway
) -> None:
    call_and_check(case, served_gateway, {"Authorization": f"Bearer {served_gateway.api_key}"})


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES // 4,  # most answers are the same 401
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_without_a_key_every_answer_is_documented_and_no_5xx(
    case: schemathesis.Case, served_gateway: ServedGateway
) -> None:
    call_and_check(case, served_gateway, None)


@steered.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_contract_valid_events_are_published_and_answered_as_documented(
    case: schemathesis.Case, served_gateway: ServedGateway
) -> None:
    call_and_check(case, served_gateway, {"Authorization": f"Bearer {served_gateway.api_key}"})


#: refusals of valid requests for what no schema can say (above): not held against it
BEYOND_THE_SCHEMA = {
    "delivery-too-far-ahead",  # deliver_at: how far ahead of now it is
    "idempotency-key-reused",  # an id or Idempotency-Key sent before with another body
    "signature-missing",  # the provider's signature (an empty header is a string too)…
    "signature-malformed",  # …which only the provider can make
    "signature-mismatch",
    "signature-stale",
}


def _value_at(body: object, loc: list[str | int]) -> object:
    """The request body's value at a problem's error location (None when it is not there)."""
    for part in loc:
        try:
            body = body[part]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return None
    return body


def call_and_check(
    case: schemathesis.Case, served_gateway: ServedGateway, headers: dict[str, str] | None
) -> None:
    response = case.call(base_url=served_gateway.url, headers=headers, timeout=10)
    content_type = response.headers.get("content-type", [""])[0]
    checks = CHECKS
    if response.status_code in (200, 202) and "json" in content_type:
        served_gateway.remember(response.json())
    elif "problem+json" in content_type:
        problem = response.json()
        reason = str(problem.get("type", "")).rsplit("/", 1)[-1]
        # an integer written 1999.0: JSON Schema counts it an integer, the contracts take
        # integers written as such only (a unit mistake is never coerced: contracts README)
        integral_float = reason == "invalid-event-data" and all(
            error["type"] == "int_type" for error in problem.get("errors", [])
        )
        # a string ending in a line break, refused by a pattern ending in `$`: the generator
        # reads `$` as Python does (it matches before a final "\n"); JSON Schema's reading
        # (ECMA-262) and the contracts' both refuse it
        trailing_newline = reason == "invalid-event-data" and all(
            error["type"] == "string_pattern_mismatch"
            and str(_value_at(case.body, error["loc"])).endswith("\n")
            for error in problem.get("errors", [])
        )
        if reason in BEYOND_THE_SCHEMA or integral_float or trailing_newline:
            checks = [check for check in CHECKS if check is not positive_data_acceptance]
    case.validate_response(response, checks=checks, headers=headers)
