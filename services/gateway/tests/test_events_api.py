"""POST /v1/events and /v1/events:batch against a real Redis: every status code."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
import redis.asyncio

from riverbed import keys
from riverbed.service import Service
from riverbed_gateway.keys import request_idempotency_key

pytestmark = pytest.mark.integration

Gateway = tuple[Service, httpx.AsyncClient]


def email(to: str = "ada@example.com", **extra: Any) -> dict[str, Any]:
    return {
        "type": "email.requested.v1",
        "data": {"to": to, "subject": "Hi", "text": "Hello"},
        **extra,
    }


async def stored_event(
    redis_client: redis.asyncio.Redis, stream: str, entry_id: str
) -> dict[str, Any]:
    [(_, fields)] = await redis_client.xrange(keys.stream_key(stream), entry_id, entry_id)
    document: dict[str, Any] = json.loads(fields[b"event"])
    return document


async def test_an_accepted_event_is_on_its_stream_as_cloudevents(
    gateway: Gateway, redis_client: redis.asyncio.Redis
) -> None:
    _, http = gateway
    response = await http.post(
        "/v1/events", json=email(subject="user/7"), headers={"X-Request-Id": "req-42"}
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["type"] == "email.requested.v1"
    assert accepted["stream"] == "email.requested"
    assert response.headers["x-request-id"] == "req-42"
    stored = await stored_event(redis_client, "email.requested", accepted["entry_id"])
    assert stored["id"] == accepted["id"]
    assert stored["correlationid"] == "req-42"
    assert stored["subject"] == "user/7"
    assert stored["source"] == "urn:riverbed:gateway:local"
    assert stored["specversion"] == "1.0"


async def test_unknown_type_is_422_naming_the_known_types(gateway: Gateway) -> None:
    _, http = gateway
    response = await http.post("/v1/events", json={"type": "nope.v1", "data": {}})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert "email.requested.v1" in problem["known_types"]
    assert problem["status"] == 422
    assert {"type", "title", "status", "detail"} <= set(problem)


async def test_data_failing_its_contract_is_422_with_field_errors(gateway: Gateway) -> None:
    _, http = gateway
    response = await http.post(
        "/v1/events", json={"type": "payment.succeeded.v1", "data": {"amount": "ten"}}
    )
    assert response.status_code == 422
    locations = [tuple(e["loc"]) for e in response.json()["errors"]]
    assert ("data", "amount") in locations
    assert all("input" not in e for e in response.json()["errors"]), "inputs are not echoed"


async def test_malformed_json_is_400(gateway: Gateway) -> None:
    _, http = gateway
    response = await http.post(
        "/v1/events", content=b'{"type": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["type"].endswith("malformed-json")


async def test_wrong_content_type_is_415_naming_what_is_accepted(gateway: Gateway) -> None:
    _, http = gateway
    response = await http.post(
        "/v1/events", content=json.dumps(email()), headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert response.json()["accepted"] == ["application/json"]


async def test_a_body_over_the_limit_is_413(start_gateway: Any) -> None:
    _, http = await start_gateway(max_body_bytes=2048)
    big = email(subject="x" * 4096)
    response = await http.post("/v1/events", json=big)
    assert response.status_code == 413


async def test_missing_or_wrong_key_is_401_and_out_of_scope_is_403(
    start_gateway: Any,
) -> None:
    _, http = await start_gateway(
        api_keys=[{"name": "mailer", "key": "mail-only", "scopes": ["email.*"]}]
    )
    assert (
        await http.post("/v1/events", json=email(), headers={"Authorization": ""})
    ).status_code == 401
    wrong = await http.post("/v1/events", json=email(), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == "Bearer"
    mailer = {"Authorization": "Bearer mail-only"}
    assert (await http.post("/v1/events", json=email(), headers=mailer)).status_code == 202
    payment = {
        "type": "payment.succeeded.v1",
        "data": {
            "provider": "stripe",
            "provider_payment_id": "pi_1",
            "amount": 100,
            "currency": "EUR",
        },
    }
    refused = await http.post("/v1/events", json=payment, headers=mailer)
    assert refused.status_code == 403
    assert "email.*" in refused.json()["detail"]


async def test_a_batch_is_all_or_nothing(
    gateway: Gateway, redis_client: redis.asyncio.Redis
) -> None:
    _, http = gateway
    marker = uuid.uuid4().hex
    bad = {
        "events": [email(f"{marker}-{i}@example.com") for i in range(3)]
        + [{"type": "email.requested.v1", "data": {}}]
    }
    before = await redis_client.xlen(keys.stream_key("email.requested"))
    response = await http.post("/v1/events:batch", json=bad)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][:2] == ["events", 3]
    assert await redis_client.xlen(keys.stream_key("email.requested")) == before

    good = {"events": [email(f"{marker}-{i}@example.com") for i in range(5)]}
    response = await http.post("/v1/events:batch", json=good)
    assert response.status_code == 202
    accepted = response.json()["events"]
    assert len(accepted) == 5
    stored = await stored_event(redis_client, "email.requested", accepted[4]["entry_id"])
    assert stored["data"]["to"] == f"{marker}-4@example.com"


async def test_a_batch_over_the_limit_is_refused(start_gateway: Any) -> None:
    _, http = await start_gateway(max_batch_events=3)
    response = await http.post("/v1/events:batch", json={"events": [email()] * 4})
    assert response.status_code == 422
    assert "at most 3" in response.json()["detail"]


async def test_same_idempotency_key_and_body_replays_without_publishing_again(
    gateway: Gateway, redis_client: redis.asyncio.Redis
) -> None:
    _, http = gateway
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    first = await http.post("/v1/events", json=email(), headers=headers)
    length = await redis_client.xlen(keys.stream_key("email.requested"))
    again = await http.post("/v1/events", json=email(), headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert await redis_client.xlen(keys.stream_key("email.requested")) == length


async def test_same_idempotency_key_with_another_body_is_422(gateway: Gateway) -> None:
    _, http = gateway
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    assert (await http.post("/v1/events", json=email(), headers=headers)).status_code == 202
    other = await http.post("/v1/events", json=email("grace@example.com"), headers=headers)
    assert other.status_code == 422
    assert other.json()["type"].endswith("idempotency-key-reused")


async def test_same_idempotency_key_while_the_first_is_in_flight_is_409(
    gateway: Gateway, redis_client: redis.asyncio.Redis
) -> None:
    _, http = gateway
    key = uuid.uuid4().hex
    body = json.dumps(email()).encode()
    # the first request holds the key: what a concurrent twin finds
    from riverbed_gateway.domain.idempotency import fingerprint

    record = {"state": "in_flight", "fingerprint": fingerprint("POST", "/v1/events", body)}
    await redis_client.set(request_idempotency_key("local", key), json.dumps(record), px=30_000)
    response = await http.post(
        "/v1/events",
        content=body,
        headers={"Idempotency-Key": key, "Content-Type": "application/json"},
    )
    assert response.status_code == 409


async def test_a_client_event_id_dedups_without_the_header(
    gateway: Gateway, redis_client: redis.asyncio.Redis
) -> None:
    _, http = gateway
    event = email(id=f"client-{uuid.uuid4().hex}")
    first = await http.post("/v1/events", json=event)
    length = await redis_client.xlen(keys.stream_key("email.requested"))
    again = await http.post("/v1/events", json=event)
    assert first.json()["id"] == event["id"]
    assert again.json() == first.json()
    assert await redis_client.xlen(keys.stream_key("email.requested")) == length


async def test_rate_limit_is_429_with_retry_after_and_ratelimit_headers(
    start_gateway: Any,
) -> None:
    name = f"limited-{uuid.uuid4().hex[:8]}"
    _, http = await start_gateway(
        rate_limit_per_s=1, rate_limit_burst=3, api_keys=[{"name": name, "key": name}]
    )
    auth = {"Authorization": f"Bearer {name}"}
    ok = await http.post("/v1/events:batch", json={"events": [email()] * 3}, headers=auth)
    assert ok.status_code == 202
    assert ok.headers["ratelimit-limit"] == "3"
    assert ok.headers["ratelimit-remaining"] == "0"
    refused = await http.post("/v1/events", json=email(), headers=auth)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-remaining"] == "0"


async def test_rate_limit_is_shared_by_two_gateway_replicas(start_gateway: Any) -> None:
    name = f"shared-{uuid.uuid4().hex[:8]}"
    settings = {
        "rate_limit_per_s": 1,
        "rate_limit_burst": 2,
        "api_keys": [{"name": name, "key": name}],
    }
    _, first = await start_gateway(**settings)
    _, second = await start_gateway(**settings)
    auth = {"Authorization": f"Bearer {name}"}
    assert (await first.post("/v1/events", json=email(), headers=auth)).status_code == 202
    assert (await second.post("/v1/events", json=email(), headers=auth)).status_code == 202
    assert (await first.post("/v1/events", json=email(), headers=auth)).status_code == 429


async def test_no_api_key_ever_appears_in_the_logs(
    start_gateway: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from riverbed.logging import configure_logging

    configure_logging("INFO", "json")
    secret = f"sk-{uuid.uuid4().hex}"
    _, http = await start_gateway(api_keys=[{"name": "logged", "key": secret}])
    await http.post("/v1/events", json=email(), headers={"Authorization": f"Bearer {secret}"})
    await http.post("/v1/events", json=email(), headers={"Authorization": f"Bearer {secret}x"})
    output = capsys.readouterr().out
    assert '"path": "/v1/events"' in output, "the access log was written"
    assert secret not in output


async def test_redis_down_is_503_and_nothing_is_claimed_to_be_published(own_redis: Any) -> None:
    from riverbed.settings import RedisSettings
    from riverbed_gateway.bootstrap import create_service
    from riverbed_gateway.settings import GatewaySettings

    service = create_service(
        GatewaySettings(local_api_key="test-key"),
        redis_settings=RedisSettings(url=own_redis.url, socket_timeout=1, connect_timeout=1),
    )
    await service.start()
    try:
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://g", headers={"Authorization": "Bearer test-key"}
        ) as http:
            assert (await http.post("/v1/events", json=email())).status_code == 202
            own_redis.stop()
            response = await http.post("/v1/events", json=email())
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            assert "nothing was published" in response.json()["detail"]
    finally:
        await service.stop()


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"type": "email.requested.v1", "data": {"n": NaN}}', "not valid JSON"),
        (b'{"n": ' + b"9" * 5000 + b"}", "not valid JSON"),
    ],
    ids=["nan", "huge-integer"],
)
async def test_json_that_python_would_choke_on_is_400(
    start_gateway: Any, body: bytes, detail: str
) -> None:
    _, http = await start_gateway(max_body_bytes=1024 * 1024)
    response = await http.post(
        "/v1/events", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert detail in response.json()["detail"]
    assert "set_int_max_str_digits" not in response.text


async def test_data_too_deep_to_store_is_422_and_nothing_is_published(
    gateway: Gateway, redis_client: redis.asyncio.Redis
) -> None:
    _, http = gateway
    nested: Any = 1
    for _ in range(300):
        nested = {"a": nested}
    event = {
        "type": "email.requested.v1",
        "data": {"to": "a@example.com", "template": "welcome", "variables": {"deep": nested}},
    }
    before = await redis_client.xlen(keys.stream_key("email.requested"))
    response = await http.post("/v1/events", json=event)
    assert response.status_code == 422, response.text
    assert await redis_client.xlen(keys.stream_key("email.requested")) == before


async def test_an_unreasonable_request_id_is_replaced(
    gateway: Gateway, redis_client: redis.asyncio.Redis
) -> None:
    _, http = gateway
    response = await http.post("/v1/events", json=email(), headers={"X-Request-Id": "x" * 2000})
    assert response.status_code == 202
    chosen = response.headers["x-request-id"]
    assert len(chosen) == 32
    stored = await stored_event(redis_client, "email.requested", response.json()["entry_id"])
    assert stored["correlationid"] == chosen


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("header", "carried"),
    [
        (TRACEPARENT, TRACEPARENT),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", None),  # no flags
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),  # zero trace id
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", None),  # uppercase
    ],
    ids=["valid", "truncated", "zero-trace", "uppercase"],
)
async def test_a_w3c_traceparent_is_carried_into_every_event_and_a_bad_one_ignored(
    gateway: Gateway, redis_client: redis.asyncio.Redis, header: str, carried: str | None
) -> None:
    _, http = gateway
    response = await http.post(
        "/v1/events:batch",
        json={"events": [email(), email("bob@example.com")]},
        headers={"traceparent": header},
    )
    assert response.status_code == 202, response.text
    for accepted in response.json()["events"]:
        stored = await stored_event(redis_client, "email.requested", accepted["entry_id"])
        assert stored.get("traceparent") == carried


async def test_ingestion_goes_ahead_of_fastapis_stack_and_the_rest_through_it(
    gateway: Gateway,
) -> None:
    service, http = gateway
    app = service.app
    await http.get("/healthz")  # the stack is built by the first request through it
    built = app.middleware_stack
    assert built is not None
    through_stack: list[str] = []

    async def stack(scope: Any, receive: Any, send: Any) -> None:
        through_stack.append(scope["path"])
        await built(scope, receive, send)

    app.middleware_stack = stack
    answered = await http.post("/v1/events", json=email(), headers={"X-Request-Id": "r-1"})
    assert answered.status_code == 202
    assert answered.headers["x-request-id"] == "r-1"  # the access log layer is on that path
    assert (await http.post("/v1/events", json={"type": "nope.v1", "data": {}})).status_code == 422
    assert through_stack == []
    assert (await http.get("/v1/events")).status_code == 405  # not POST: FastAPI answers
    assert (await http.get("/healthz")).status_code == 200
    assert through_stack == ["/v1/events", "/healthz"]
