"""The gateway skeleton: settings from `GATEWAY_` variables, ops routes mounted."""

from __future__ import annotations

import httpx
import pytest

from riverbed_gateway.__main__ import create_service
from riverbed_gateway.settings import GatewaySettings


def test_settings_default_to_the_conventional_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_PORT", raising=False)
    assert GatewaySettings().port == 8000


def test_settings_read_the_gateway_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "9123")
    assert GatewaySettings().port == 9123


async def test_liveness_answers_before_redis_is_connected() -> None:
    service = create_service(GatewaySettings())
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"]["ok"] is False
