"""The webhooks skeleton: settings from `WEBHOOKS_` variables, ops routes mounted."""

from __future__ import annotations

import httpx
import pytest

from riverbed_webhooks.__main__ import create_service
from riverbed_webhooks.settings import WebhooksSettings


def test_settings_default_to_the_conventional_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBHOOKS_PORT", raising=False)
    assert WebhooksSettings().port == 8002


def test_settings_read_the_webhooks_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOKS_PORT", "9123")
    assert WebhooksSettings().port == 9123


async def test_liveness_answers_before_redis_is_connected() -> None:
    service = create_service(WebhooksSettings())
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"]["ok"] is False
