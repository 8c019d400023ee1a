"""The management API: authentication, validation as problem details, endpoint lifecycle."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from riverbed_webhooks.bootstrap import create_service
from riverbed_webhooks.settings import WebhooksSettings

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


async def test_without_an_api_key_configured_the_api_answers_503() -> None:
    service = create_service(WebhooksSettings(api_key=None))
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/v1/endpoints")
        assert answer.status_code == 503
        assert answer.headers["content-type"] == PROBLEM
        assert "WEBHOOKS_API_KEY" in answer.json()["detail"]
        assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_before_the_service_has_started_the_api_answers_503_with_retry_after() -> None:
    service = create_service(WebhooksSettings(api_key="k"))
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/v1/endpoints", headers={"Authorization": "Bearer k"})
        assert answer.status_code == 503
        assert answer.headers["content-type"] == PROBLEM
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["type"].endswith("/starting")
        refused = await client.get("/v1/endpoints", headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401  # the key is checked first, started or not


async def test_a_missing_or_wrong_key_is_401(start_service: Any) -> None:
    running = await start_service()
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer nope"}):
        answer = await running.client.get("/v1/endpoints", headers=headers)
        assert answer.status_code == 401
        assert answer.json()["type"].endswith("/unauthorized")


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"url": "ftp://x.example.com"}, "url", "https://"),
        ({"url": "http://10.0.0.1/hook"}, "url", "private"),
        ({"url": "http://2130706433/hook"}, "url", "non-canonical"),
        ({"url": "http://0x7f000001/hook"}, "url", "non-canonical"),
        ({"url": "http://10.1/hook"}, "url", "non-canonical"),
        ({"url": "http://\uff11\uff12\uff17.0.0.1/hook"}, "url", "non-canonical"),
        ({"url": "https://x.example.com", "event_types": ["Nope"]}, "event_types", "filter"),
        ({"url": "https://x.example.com", "rate_limit_per_s": 0}, "rate_limit_per_s", "1-"),
        ({"url": "https://x.example.com", "max_concurrency": 5000}, "max_concurrency", "1-"),
        ({"url": "https://x.example.com", "surprise": 1}, "surprise", "Extra"),
        ({}, "url", "required"),
    ],
)
async def test_invalid_endpoints_are_422_problems_naming_the_field(
    start_service: Any, body: dict[str, Any], field: str, says: str
) -> None:
    running = await start_service()
    answer = await running.client.post("/v1/endpoints", json=body)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert answer.headers["content-type"] == PROBLEM
    found = [e for e in problem["errors"] if field in e["loc"]]
    assert found, problem
    assert says.lower() in found[0]["msg"].lower(), problem


async def test_endpoint_lifecycle_and_the_secret_shown_only_on_create_and_rotate(
    start_service: Any,
) -> None:
    running = await start_service()
    client = running.client
    created = await client.post(
        "/v1/endpoints",
        json={"url": "https://hooks.example.com/a", "event_types": ["payment.*"],
              "description": "orders", "rate_limit_per_s": 5},
    )  # fmt: skip
    assert created.status_code == 201
    endpoint = created.json()
    secret = endpoint["secret"]
    assert secret.startswith("whsec_")
    ep = endpoint["id"]

    fetched = (await client.get(f"/v1/endpoints/{ep}")).json()
    assert "secret" not in fetched
    assert fetched["event_types"] == ["payment.*"]
    assert fetched["rate_limit_per_s"] == 5

    patched = await client.patch(
        f"/v1/endpoints/{ep}", json={"description": "all", "rate_limit_per_s": None}
    )
    assert patched.status_code == 200
    assert (patched.json()["description"], patched.json()["rate_limit_per_s"]) == ("all", None)
    assert patched.json()["event_types"] == ["payment.*"]  # absent: unchanged

    disabled = (await client.post(f"/v1/endpoints/{ep}/disable")).json()
    assert (disabled["enabled"], disabled["disabled_reason"]) == (False, "manual")
    enabled = (await client.post(f"/v1/endpoints/{ep}/enable")).json()
    assert (enabled["enabled"], enabled["disabled_reason"]) == (True, None)

    rotated = await client.post(f"/v1/endpoints/{ep}/secret/rotate", json={"grace_period_s": 60})
    assert rotated.status_code == 200
    assert rotated.json()["secret"] not in (secret, None)
    assert (await client.get(f"/v1/endpoints/{ep}")).json()["secret_rotation_ends_at"]

    listed = (await client.get("/v1/endpoints", params={"limit": 500})).json()
    assert ep in [e["id"] for e in listed["data"]]
    assert all("secret" not in e for e in listed["data"])

    assert (await client.delete(f"/v1/endpoints/{ep}")).status_code == 204
    gone = await client.get(f"/v1/endpoints/{ep}")
    assert gone.status_code == 404
    assert gone.headers["content-type"] == PROBLEM


async def test_endpoints_page_by_id(start_service: Any) -> None:
    running = await start_service()
    ids = [
        (
            await running.client.post("/v1/endpoints", json={"url": f"https://x.example.com/{i}"})
        ).json()["id"]
        for i in range(3)
    ]
    first = (await running.client.get("/v1/endpoints", params={"limit": 2})).json()
    second = (
        await running.client.get("/v1/endpoints", params={"limit": 2, "after": first["next_after"]})
    ).json()
    assert [e["id"] for e in first["data"] + second["data"]] == ids
    assert second["next_after"] is None


async def test_replaying_an_unknown_delivery_is_404_and_to_a_disabled_endpoint_409(
    start_service: Any,
) -> None:
    running = await start_service()
    assert (await running.client.post("/v1/deliveries/dlv_nope/replay")).status_code == 404
    ep = (await running.client.post("/v1/endpoints", json={"url": "https://x.example.com"})).json()
    await running.client.post(f"/v1/endpoints/{ep['id']}/disable")
    answer = await running.client.post(
        f"/v1/endpoints/{ep['id']}/replay", json={"since": "2024-01-01T00:00:00Z"}
    )
    assert answer.status_code == 409
    assert "enable it" in answer.json()["detail"]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
async def test_a_cursor_outside_the_64_bit_row_ids_is_a_422_stating_the_range(
    start_service: Any, database: Any
) -> None:
    running = await start_service(database)
    created = await running.client.post("/v1/endpoints", json={"url": "https://x.example.com"})
    attempts = f"/v1/endpoints/{created.json()['id']}/attempts"
    for value in (str(2**63), str(10**30), "0", "-1"):
        answer = await running.client.get(attempts, params={"before": value})
        assert answer.status_code == 422, (value, answer.text)
        assert answer.headers["content-type"] == PROBLEM
        [error] = answer.json()["errors"]
        assert error["loc"] == ["query", "before"]
        assert f"from 1 to {2**63 - 1}" in error["msg"]
    largest = await running.client.get(attempts, params={"before": str(2**63 - 1)})
    assert largest.status_code == 200, largest.text
    assert largest.json() == {"data": [], "next_before": None}
