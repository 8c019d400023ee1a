"""What a caller of the gateway may and may not do: the findings of a security probe, each
reproduced against the gateway (every test here failed before the change that made it pass).

- only public types are accepted, whatever a key's scopes; no source in urn:riverbed:;
- a client's event id is scoped to its API key: two keys, one client id, two events;
- JSON the readers of the streams could not decode (too deep, non-finite numbers) and email
  header text with control characters are refused where they enter;
- a client that goes away mid-body is counted as 499, not as a 500;
- no redirect built from the Host header.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio
from prometheus_client import REGISTRY as METRICS

from riverbed import keys
from riverbed.consumer import Message, StreamConsumer, Subscription
from riverbed.delay import DelayStore
from riverbed.logging import configure_logging
from riverbed.service import Service
from riverbed.settings import RedisSettings
from riverbed.testing import RedisServer, fast_settings, wait_for
from riverbed_contracts import MAX_JSON_DEPTH, event_from_entry, validate_data
from riverbed_contracts.registry import REGISTRY
from riverbed_gateway.bootstrap import create_service
from riverbed_gateway.domain.api_keys import PUBLIC_TYPES
from riverbed_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

Gateway = tuple[Service, httpx.AsyncClient]
NOT_PUBLIC = sorted(t for t, spec in REGISTRY.items() if spec.access != "public")


def email(**data: Any) -> dict[str, Any]:
    return {
        "type": "email.requested.v1",
        "data": {"to": "ada@example.com", "subject": "Hi", "text": "Hello", **data},
    }


def example_data(event_type: str) -> dict[str, Any]:
    """The contract's own example: data that would pass validation."""
    schema = REGISTRY[event_type].model.model_json_schema()
    example: dict[str, Any] = schema["examples"][0]
    return example


async def length(client: redis.asyncio.Redis, stream: str) -> int:
    return int(await client.xlen(keys.stream_key(stream)))


# -- only public types ------------------------------------------------------------------


@pytest.mark.parametrize("event_type", NOT_PUBLIC)
async def test_a_type_that_is_not_public_is_403_whatever_the_scopes(
    start_gateway: Callable[..., Any], redis_client: redis.asyncio.Redis, event_type: str
) -> None:
    """The probe's high finding: an ingestion key could post webhook.delivery.requested.v1
    (the webhooks service would sign and send it) or an outcome such as payment.recorded.v1."""
    name = f"wide-{uuid.uuid4().hex[:8]}"
    domain = f"{event_type.split('.', 1)[0]}.*"  # payment.* matches payment.recorded.v1 too
    scopes = ["*", domain] if any(t.startswith(domain[:-1]) for t in PUBLIC_TYPES) else ["*"]
    _, http = await start_gateway(
        api_keys=[{"name": name, "key": f"{name}-secret", "scopes": scopes}]
    )
    spec = REGISTRY[event_type]
    before = await length(redis_client, spec.stream)
    for auth in ("Bearer test-key", f"Bearer {name}-secret"):  # RIVERBED_API_KEY, a wide key
        body = {"type": event_type, "data": example_data(event_type)}
        response = await http.post("/v1/events", json=body, headers={"Authorization": auth})
        assert response.status_code == 403, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"].endswith("/type-not-public")
        assert repr(event_type) in problem["detail"]
        assert f"is {spec.access}" in problem["detail"]
        for producer in spec.producers:
            assert producer in problem["detail"], "it says who may produce it"
        assert problem["access"] == spec.access
        assert problem["producers"] == list(spec.producers)
        assert problem["public_types"] == list(PUBLIC_TYPES)
    assert await length(redis_client, spec.stream) == before, "nothing published"


async def test_a_batch_with_one_internal_command_publishes_nothing(
    gateway: Gateway, redis_client: redis.asyncio.Redis
) -> None:
    _, http = gateway
    command = "webhook.delivery.requested.v1"
    before = await length(redis_client, "email.requested")
    response = await http.post(
        "/v1/events:batch",
        json={"events": [email(), {"type": command, "data": example_data(command)}]},
    )
    assert response.status_code == 403, response.text
    assert response.json()["errors"][0]["loc"] == ["events", 1, "type"]
    assert await length(redis_client, "email.requested") == before


async def test_an_unknown_type_lists_only_the_public_types(gateway: Gateway) -> None:
    _, http = gateway
    response = await http.post("/v1/events", json={"type": "nope.v1", "data": {}})
    assert response.status_code == 422
    assert response.json()["known_types"] == list(PUBLIC_TYPES)


@pytest.mark.parametrize(
    "source",
    [
        "urn:riverbed:webhooks",
        "urn:riverbed:payments",
        "urn:riverbed:inbound:stripe",
        "urn:riverbed:gateway:local",
        "urn:riverbed",
        "URN:Riverbed:email",
        " urn:riverbed:email",
    ],
)
async def test_a_source_in_the_services_namespace_is_422_saying_why(
    gateway: Gateway, redis_client: redis.asyncio.Redis, source: str
) -> None:
    _, http = gateway
    before = await length(redis_client, "email.requested")
    response = await http.post("/v1/events", json={**email(), "source": source})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"].endswith("/reserved-source")
    assert "may not pose as one" in problem["detail"]
    assert problem["errors"][0]["loc"] == ["source"]
    assert await length(redis_client, "email.requested") == before


async def test_a_source_of_the_clients_own_is_kept_and_the_default_names_the_key(
    gateway: Gateway, redis_client: redis.asyncio.Redis
) -> None:
    _, http = gateway
    own = await http.post("/v1/events", json={**email(), "source": "urn:example:billing"})
    default = await http.post("/v1/events", json=email())
    for response, source in ((own, "urn:example:billing"), (default, "urn:riverbed:gateway:local")):
        assert response.status_code == 202, response.text
        entry_id = response.json()["entry_id"]
        [(_, fields)] = await redis_client.xrange(
            keys.stream_key("email.requested"), entry_id, entry_id
        )
        assert json.loads(fields[b"event"])["source"] == source


# -- event ids scoped to the key ----------------------------------------------------------


@pytest.fixture
async def private_gateway(own_redis: RedisServer) -> AsyncIterator[tuple[Service, str, str]]:
    """A gateway on a Redis of its own with the keys alice and bob."""
    service = create_service(
        GatewaySettings(
            api_keys=[
                {"name": "alice", "key": "alice-secret", "scopes": ["email.*"]},
                {"name": "bob", "key": "bob-secret", "scopes": ["email.*"]},
            ]
        ),
        redis_settings=RedisSettings(url=own_redis.url),
    )
    await service.start()
    try:
        yield service, "Bearer alice-secret", "Bearer bob-secret"
    finally:
        await service.stop()


async def test_two_keys_posting_one_client_id_are_two_events_both_handled(
    private_gateway: tuple[Service, str, str], own_redis: RedisServer
) -> None:
    """The probe's finding: consumers deduplicate on the event id alone, so bob's order-918
    after alice's was dropped as a duplicate."""
    service, alice, bob = private_gateway
    client = redis.asyncio.Redis.from_url(own_redis.url)
    handled: list[tuple[str, str]] = []  # (event id, clientid)

    async def handler(message: Message[Any]) -> None:
        handled.append((message.event.id, str((message.event.model_extra or {})["clientid"])))

    consumer = StreamConsumer(
        client,
        Subscription(stream="email.requested", group="mailer", handler=handler),
        settings=fast_settings(),
        consumer_name="c1",
        service="test",
    )
    accepted = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app), base_url="http://g"
    ) as http:
        for auth in (alice, bob):
            response = await http.post(
                "/v1/events",
                json={**email(), "id": "order-918"},
                headers={"Authorization": auth},
            )
            assert response.status_code == 202, response.text
            accepted.append(response.json())
        # the same key again: its own duplicate, answered as the first time
        again = await http.post(
            "/v1/events", json={**email(), "id": "order-918"}, headers={"Authorization": alice}
        )
        assert again.json() == accepted[0]
    consumer.start()
    try:
        await wait_for(lambda: len(handled) == 2, what="both events handled")
    finally:
        consumer.stop()
        await consumer.join()
        await client.aclose()

    assert [item["id"] for item in accepted] == ["order-918", "order-918"], "the client's id back"
    event_ids = {item["event_id"] for item in accepted}
    assert len(event_ids) == 2, "one event id per key"
    assert sorted(handled) == sorted((event_id, "order-918") for event_id in event_ids)


async def test_a_delayed_event_is_looked_up_and_cancelled_by_the_clients_own_id(
    private_gateway: tuple[Service, str, str],
) -> None:
    service, alice, bob = private_gateway
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app), base_url="http://g"
    ) as http:
        kept = {}
        for auth in (alice, bob):
            response = await http.post(
                "/v1/events",
                json={**email(), "id": "order-918", "delay": 3600},
                headers={"Authorization": auth},
            )
            assert response.status_code == 202, response.text
            assert response.json()["entry_id"] is None
            kept[auth] = response.json()
        assert kept[alice]["event_id"] != kept[bob]["event_id"]

        for auth in (alice, bob):
            found = await http.get("/v1/scheduled/order-918", headers={"Authorization": auth})
            assert found.status_code == 200, found.text
            body = found.json()
            assert body["id"] == "order-918"
            assert body["event_id"] == kept[auth]["event_id"]
            assert body["event"]["id"] == kept[auth]["event_id"]
            assert body["event"]["clientid"] == "order-918"
            # the event id works too, as the 202 of an event without a client id gives it
            by_event_id = await http.get(
                f"/v1/scheduled/{kept[auth]['event_id']}", headers={"Authorization": auth}
            )
            assert by_event_id.json()["event_id"] == kept[auth]["event_id"]

        cancel = await http.delete("/v1/scheduled/order-918", headers={"Authorization": alice})
        assert cancel.status_code == 204
        gone = await http.get("/v1/scheduled/order-918", headers={"Authorization": alice})
        assert gone.status_code == 404
        still = await http.get("/v1/scheduled/order-918", headers={"Authorization": bob})
        assert still.json()["event_id"] == kept[bob]["event_id"], "bob's is untouched"
        assert (
            await http.delete("/v1/scheduled/order-918", headers={"Authorization": bob})
        ).status_code == 204
    assert await DelayStore(service.redis, "email.requested").waiting() == (0, 0, None)


# -- what every reader can decode ---------------------------------------------------------


def nested_body(depth: int) -> bytes:
    """An email request whose body nests objects ``depth`` levels deep (the body is 1)."""
    levels = depth - 2  # the body and its data are 2; the template variables the rest
    head = b'{"type":"email.requested.v1","data":{"to":"a@example.com","template":"welcome",'
    return head + b'"variables":' + b'{"a":' * (levels - 1) + b"{}" + b"}" * (levels - 1) + b"}}"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 199, 200, 255, 100_000])
async def test_json_nested_past_the_limit_is_422_saying_it(
    start_gateway: Callable[..., Any], redis_client: redis.asyncio.Redis, depth: int
) -> None:
    """199-255 levels were accepted, and consumers dead-lettered them as undecodable."""
    _, http = await start_gateway(max_body_bytes=1024 * 1024)
    before = await length(redis_client, "email.requested")
    response = await http.post(
        "/v1/events", content=nested_body(depth), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"].endswith("/nested-too-deeply")
    assert f"at most {MAX_JSON_DEPTH}" in problem["detail"]
    assert problem["max_depth"] == MAX_JSON_DEPTH
    assert await length(redis_client, "email.requested") == before


async def test_json_nested_to_the_limit_is_published_and_decodes(
    gateway: Gateway, redis_client: redis.asyncio.Redis
) -> None:
    _, http = gateway
    response = await http.post(
        "/v1/events",
        content=nested_body(MAX_JSON_DEPTH),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 202, response.text
    entry_id = response.json()["entry_id"]
    [(_, fields)] = await redis_client.xrange(
        keys.stream_key("email.requested"), entry_id, entry_id
    )
    event = event_from_entry(fields)  # what a consumer does with it
    validate_data(event)
    assert json.loads(fields[b"event"])["data"]["template"] == "welcome"


@pytest.mark.parametrize("number", [b"1e999", b"-1e999", b"1.5e308000"])
async def test_a_number_no_float_holds_is_422(
    gateway: Gateway, redis_client: redis.asyncio.Redis, number: bytes
) -> None:
    """1e999 was accepted and stored as null."""
    _, http = gateway
    body = (
        b'{"type":"email.requested.v1","data":{"to":"a@example.com","template":"welcome",'
        b'"variables":{"n":' + number + b"}}}"
    )
    before = await length(redis_client, "email.requested")
    response = await http.post(
        "/v1/events", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"].endswith("/number-out-of-range")
    assert number.decode() in problem["detail"]
    assert await length(redis_client, "email.requested") == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subject", "Hi\x00there"),
        ("subject", "Hi\r\nBcc: everyone@example.com"),
        ("subject", "Hi\x1b[2J"),
        ("subject", "Hi\u2028there"),
        ("to", "ada\x00@example.com"),
    ],
    ids=["nul", "crlf", "escape", "line-separator", "nul-in-address"],
)
async def test_control_characters_in_an_email_header_are_422(
    gateway: Gateway, field: str, value: str
) -> None:
    """A NUL in a subject reached the email's header."""
    _, http = gateway
    response = await http.post("/v1/events", json=email(**{field: value}))
    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["errors"]] == [["data", field]]


async def test_a_tab_and_any_printable_text_in_a_subject_are_fine(gateway: Gateway) -> None:
    _, http = gateway
    response = await http.post("/v1/events", json=email(subject="Grüße\tfrom Zürich ✓"))
    assert response.status_code == 202, response.text


# -- how requests end ---------------------------------------------------------------------


@pytest.mark.parametrize("host", [None, "evil.example"])
async def test_a_trailing_slash_is_404_never_a_redirect(gateway: Gateway, host: str | None) -> None:
    """POST /v1/events/ answered 307 with a Location built from the Host header."""
    _, http = gateway
    headers = {"Host": host} if host else {}
    for method, path in (
        ("POST", "/v1/events/"),
        ("POST", "/v1/events:batch/"),
        ("GET", "/healthz/"),
    ):
        response = await http.request(method, path, json=email(), headers=headers)
        assert response.status_code == 404, (path, response.status_code)
        assert "location" not in response.headers


def requests_counted(route: str, status: str) -> float:
    value = METRICS.get_sample_value(
        "riverbed_gateway_requests_total", {"route": route, "status": status}
    )
    return value or 0.0


@pytest.mark.parametrize(
    ("path", "route", "headers"),
    [
        ("/v1/events", "/v1/events", [(b"authorization", b"Bearer test-key")]),
        ("/v1/events:batch", "/v1/events:batch", [(b"authorization", b"Bearer test-key")]),
        ("/v1/inbound/payments/stripe", "/v1/inbound/payments/{provider}", []),
    ],
)
async def test_a_client_gone_mid_body_is_counted_499_and_logged_at_info(
    start_gateway: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
    path: str,
    route: str,
    headers: list[tuple[bytes, bytes]],
) -> None:
    """It was logged as an error with a traceback and counted as a 500 (feeding the 5xx
    alert)."""
    configure_logging("INFO", "json")
    service, _ = await start_gateway(inbound_secrets={"stripe": ["whsec_test"]})
    before = {status: requests_counted(route, status) for status in ("499", "500")}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"gateway"),
            (b"content-type", b"application/json"),
            (b"content-length", b"1000"),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    arriving = [
        {"type": "http.request", "body": b'{"type": "email.req', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return arriving.pop(0) if arriving else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass  # nobody is listening

    capsys.readouterr()
    await service.app(scope, receive, send)

    assert requests_counted(route, "499") == before["499"] + 1
    assert requests_counted(route, "500") == before["500"]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert not [line for line in lines if line["level"] in ("error", "critical")], lines
    assert not [line for line in lines if "exception" in line or "exc_info" in line], lines
    [gone] = [line for line in lines if line["event"].startswith("client disconnected")]
    assert gone["level"] == "info"
    [access] = [line for line in lines if line["event"] == "request"]
    assert (access["status"], access["path"]) == (499, route)


# -- the admin key ------------------------------------------------------------------------


async def test_the_admin_key_is_no_ingestion_key(start_gateway: Callable[..., Any]) -> None:
    _, http = await start_gateway(admin_api_key="admin-secret")
    response = await http.post(
        "/v1/events", json=email(), headers={"Authorization": "Bearer admin-secret"}
    )
    assert response.status_code == 401
