"""The email skeleton: settings from `EMAIL_` variables, ops routes mounted."""

from __future__ import annotations

import httpx
import pytest

from riverbed_email.__main__ import create_service
from riverbed_email.settings import EmailSettings


def test_settings_default_to_the_conventional_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMAIL_PORT", raising=False)
    assert EmailSettings().port == 8001


def test_settings_read_the_email_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_PORT", "9123")
    assert EmailSettings().port == 9123


async def test_liveness_answers_before_redis_is_connected() -> None:
    service = create_service(EmailSettings())
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"]["ok"] is False
