"""/v1/schedules: the admin API of recurring schedules, and the gateway's own scheduler.

Each test runs a gateway on a private redis-server (``own_redis``): the API writes the
default schedule index, which must not be shared with other tests.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio
from fastapi.routing import iter_route_contexts

from riverbed import keys
from riverbed.schedules import occurrence_event_id, parse_time
from riverbed.service import Service
from riverbed.settings import RedisSettings
from riverbed.testing import RedisServer, wait_for
from riverbed_gateway.adapters.redis_key_store import KeyStore
from riverbed_gateway.bootstrap import create_service
from riverbed_gateway.domain.api_keys import configured_keys
from riverbed_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer admin-key"}
INGESTION = {"Authorization": "Bearer test-key"}
CONFIGURED = {"Authorization": "Bearer configured-key"}  # a GATEWAY_API_KEYS entry, scope *
DIGEST = {
    "cron": "0 8 * * *",
    "tz": "Europe/Berlin",
    "type": "email.requested.v1",
    "data": {"to": "ops@example.com", "subject": "Daily digest", "text": "Good morning"},
}
PAYMENT = {"provider": "stripe", "provider_payment_id": "pi_1", "amount": 100, "currency": "EUR"}

Start = Callable[..., Any]


@pytest.fixture
async def start(own_redis: RedisServer) -> AsyncIterator[Start]:
    """Start a gateway on the private Redis; yields a client without credentials."""
    started: list[tuple[Service, httpx.AsyncClient]] = []

    async def factory(**overrides: Any) -> httpx.AsyncClient:
        values: dict[str, Any] = {
            "local_api_key": "test-key",
            "api_keys": [{"name": "everything", "key": "configured-key", "scopes": ["*"]}],
            "admin_api_key": "admin-key",
            "log_format": "json",
        }
        values.update(overrides)
        service = create_service(
            GatewaySettings(**values), redis_settings=RedisSettings(url=own_redis.url)
        )
        await service.start()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.app), base_url="http://gateway"
        )
        started.append((service, client))
        return client

    yield factory
    for service, client in started:
        await client.aclose()
        await service.stop()


@pytest.fixture
async def http(start: Start) -> httpx.AsyncClient:
    client: httpx.AsyncClient = await start()
    return client


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


ROUTES = [
    ("GET", "/v1/schedules"),
    ("GET", "/v1/schedules/digest"),
    ("PUT", "/v1/schedules/digest"),
    ("DELETE", "/v1/schedules/digest"),
    ("POST", "/v1/schedules/digest:pause"),
    ("POST", "/v1/schedules/digest:resume"),
]


def admin_routes() -> list[tuple[str, str]]:
    """Every (method, path) of the admin API, read from the app itself, so that a route added
    later is covered; path parameters filled in with 'digest'."""
    app = create_service(GatewaySettings(admin_api_key="admin-key")).app  # never started
    found = [
        (method, re.sub(r"\{[^}]+\}", "digest", route.path))
        for route in iter_route_contexts(app.routes)
        if route.path is not None and route.path.startswith("/v1/schedules")
        for method in sorted(route.methods or ())
        if method != "HEAD"  # answered as its GET
    ]
    return sorted(found)


def test_the_admin_routes_are_all_found() -> None:
    """A floor, so that an enumeration finding nothing (a FastAPI change) fails loudly."""
    assert set(ROUTES) <= set(admin_routes())


@pytest.mark.parametrize(("method", "path"), admin_routes())
async def test_only_the_admin_key_is_accepted(
    start: Start, own_redis: RedisServer, method: str, path: str
) -> None:
    http = await start(key_cache_s=0)
    async with redis.asyncio.Redis.from_url(own_redis.url) as client:
        store = KeyStore(client, configured_keys(GatewaySettings()), cache_s=0)
        stored, _ = await store.create("stored-everything", ["*"])
    ingestion_keys = [INGESTION, CONFIGURED, {"Authorization": f"Bearer {stored}"}]
    for headers in ingestion_keys:  # each ingestion key works where it belongs…
        assert (await http.get(f"/v1/scheduled/{uuid.uuid4()}", headers=headers)).status_code == 404
    body = DIGEST if method == "PUT" else None
    wrong = [*ingestion_keys, {}, {"Authorization": "Bearer admin-key-but-longer"}]
    for headers in wrong:  # …and never here
        response = await http.request(method, path, json=body, headers=headers)
        assert problem(response, 401)["detail"] == "send Authorization: Bearer <API key>"
    response = await http.request(method, path, json=body, headers=ADMIN)
    assert response.status_code in (200, 201, 204, 404), response.text


async def test_without_an_admin_key_the_api_says_which_setting_enables_it(start: Start) -> None:
    http = await start(admin_api_key=None)
    for method, path in ROUTES:
        response = await http.request(method, path, headers=INGESTION)
        assert "set GATEWAY_ADMIN_API_KEY" in problem(response, 503)["detail"]
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith("/v1/schedules")]


async def test_the_api_is_in_the_openapi_document_when_enabled(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert {"/v1/schedules", "/v1/schedules/{name}", "/v1/schedules/{name}:pause"} <= set(paths)


async def test_put_creates_then_the_same_body_changes_nothing(http: httpx.AsyncClient) -> None:
    created = await http.put("/v1/schedules/digest", json=DIGEST, headers=ADMIN)
    assert created.status_code == 201, created.text
    first = created.json()
    assert first["outcome"] == "created"
    assert first["schedule"]["status"] == "active"
    assert first["schedule"]["stream"] == "email.requested"

    again = await http.put("/v1/schedules/digest", json=DIGEST, headers=ADMIN)
    assert again.status_code == 200
    assert again.json()["outcome"] == "unchanged"
    assert again.json()["schedule"]["next_fire"] == first["schedule"]["next_fire"]

    changed = await http.put(
        "/v1/schedules/digest", json={**DIGEST, "cron": "0 9 * * *"}, headers=ADMIN
    )
    assert changed.status_code == 200
    assert changed.json()["outcome"] == "updated"
    assert changed.json()["schedule"]["cron"] == "0 9 * * *"

    listed = (await http.get("/v1/schedules", headers=ADMIN)).json()["schedules"]
    assert [s["name"] for s in listed] == ["digest"]
    one = (await http.get("/v1/schedules/digest", headers=ADMIN)).json()
    assert one["data"] == DIGEST["data"]
    assert (one["fired"], one["misfires_skipped"]) == (0, 0)


@pytest.mark.parametrize(
    ("change", "accepted"),
    [
        ({"cron": "0 8 * *"}, "give five fields (minute hour day-of-month month day-of-week)"),
        ({"cron": "R 8 * * *"}, "minute field 'R' is not allowed"),
        ({"tz": "Europe/Nowhere"}, "give an IANA time zone name such as Europe/Berlin"),
        ({"cron": None, "tz": None, "every_s": 0}, "give a whole number of seconds from 1"),
        ({"every_s": 60}, "give exactly one of a cron expression"),
        ({"type": "nope.v1"}, "known types: "),
        ({"limit": 0}, "give a whole number from 1"),
        ({"start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "before start"),
    ],
)
async def test_a_bad_definition_is_422_saying_what_is_accepted(
    http: httpx.AsyncClient, change: dict[str, Any], accepted: str
) -> None:
    response = await http.put("/v1/schedules/digest", json={**DIGEST, **change}, headers=ADMIN)
    refused = problem(response, 422)
    assert refused["type"].endswith("/invalid-schedule")
    assert accepted in refused["detail"]
    assert (await http.get("/v1/schedules", headers=ADMIN)).json()["schedules"] == []


async def test_data_failing_its_contract_is_422_with_field_errors(
    http: httpx.AsyncClient,
) -> None:
    body = {**DIGEST, "data": {"to": "not-an-address", "subject": "x", "text": "y"}}
    refused = problem(await http.put("/v1/schedules/digest", json=body, headers=ADMIN), 422)
    assert [e["loc"] for e in refused["errors"]] == [["data", "to"]]
    assert all("input" not in e for e in refused["errors"]), "inputs are not echoed"


async def test_a_time_without_offset_or_a_bad_name_is_422(http: httpx.AsyncClient) -> None:
    body = {**DIGEST, "start": "2026-01-01T08:00:00"}
    problem(await http.put("/v1/schedules/digest", json=body, headers=ADMIN), 422)
    bad_name = problem(await http.get("/v1/schedules/has space", headers=ADMIN), 422)
    assert "letters, digits" in bad_name["detail"]


async def test_unknown_names_are_404(http: httpx.AsyncClient) -> None:
    for method, path in ROUTES[1:]:
        if method == "PUT":
            continue
        response = await http.request(method, path, headers=ADMIN)
        assert "no schedule named 'digest'" in problem(response, 404)["detail"]


async def test_pause_resume_and_delete(http: httpx.AsyncClient, own_redis: RedisServer) -> None:
    assert (await http.put("/v1/schedules/digest", json=DIGEST, headers=ADMIN)).status_code == 201
    paused = (await http.post("/v1/schedules/digest:pause", headers=ADMIN)).json()
    assert (paused["status"], paused["next_fire"]) == ("paused", None)
    resumed = (await http.post("/v1/schedules/digest:resume", headers=ADMIN)).json()
    assert resumed["status"] == "active"
    assert resumed["next_fire"] is not None

    deleted = await http.delete("/v1/schedules/digest", headers=ADMIN)
    assert deleted.status_code == 204
    problem(await http.get("/v1/schedules/digest", headers=ADMIN), 404)
    problem(await http.delete("/v1/schedules/digest", headers=ADMIN), 404)
    client = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        assert not await client.exists(keys.schedule_key("email.requested", "digest"))
    finally:
        await client.aclose()


async def test_the_gateway_publishes_what_is_due(
    http: httpx.AsyncClient, own_redis: RedisServer
) -> None:
    body = {"every_s": 1, "type": "payment.succeeded.v1", "data": PAYMENT, "limit": 1}
    created = await http.put("/v1/schedules/tick", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    first = created.json()["schedule"]["next_fire"]
    client = redis.asyncio.Redis.from_url(own_redis.url)
    stream = keys.stream_key("payment.succeeded")
    try:

        async def published() -> bool:
            return int(await client.xlen(stream)) == 1

        await wait_for(published, what="the gateway's scheduler publishing the occurrence")
        [(_, fields)] = await client.xrange(stream)
        event = json.loads(fields[b"event"])
        assert event["id"] == occurrence_event_id("tick", parse_time(first, what="next_fire"))
        assert event["source"] == "urn:riverbed:schedule:tick"
        assert event["data"] == PAYMENT
    finally:
        await client.aclose()
    shown = (await http.get("/v1/schedules/tick", headers=ADMIN)).json()
    assert (shown["status"], shown["fired"], shown["last_fire"]) == ("finished", 1, first)
