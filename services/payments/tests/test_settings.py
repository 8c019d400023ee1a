"""Settings from `PAYMENTS_*` variables; the ops routes answer before anything is opened."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from riverbed_payments.bootstrap import create_service
from riverbed_payments.settings import PaymentsSettings


def test_settings_default_to_the_conventional_port_and_a_local_sqlite_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("PAYMENTS_PORT", "PAYMENTS_DATABASE_URL", "PAYMENTS_API_KEY", "RIVERBED_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = PaymentsSettings()
    assert settings.port == 8003
    assert settings.database_url.get_secret_value().startswith("sqlite+aiosqlite:///var/")
    assert settings.api_key is None


def test_settings_read_the_payments_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENTS_PORT", "9123")
    monkeypatch.setenv("PAYMENTS_STREAM_ROUTES", '{"payment.succeeded": "payment.succeeded.x"}')
    settings = PaymentsSettings()
    assert settings.port == 9123
    assert settings.stream("payment.succeeded") == "payment.succeeded.x"
    assert settings.stream("payment.recorded") == "payment.recorded"


def test_the_api_key_is_payments_api_key_only_never_the_ingestion_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PAYMENTS_API_KEY", raising=False)
    monkeypatch.setenv("RIVERBED_API_KEY", "ingestion")
    assert PaymentsSettings().api_key is None  # no fallback: the API answers 503
    monkeypatch.setenv("PAYMENTS_API_KEY", "")
    assert PaymentsSettings().api_key is None  # blank is none, never an empty key
    monkeypatch.setenv("PAYMENTS_API_KEY", "own")
    key = PaymentsSettings().api_key
    assert key is not None
    assert key.get_secret_value() == "own"
    monkeypatch.setenv("PAYMENTS_API_KEY", "ingestion")
    with pytest.raises(ValidationError, match="must not be the ingestion key") as refused:
        PaymentsSettings()
    assert "'ingestion'" not in str(refused.value)


def test_a_schema_name_that_could_inject_sql_is_refused() -> None:
    with pytest.raises(ValidationError):
        PaymentsSettings(database_schema='x"; DROP TABLE y; --')


async def test_liveness_answers_before_anything_is_opened() -> None:
    service = create_service(PaymentsSettings(api_key="k"))
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"]["ok"] is False
        starting = await client.get("/v1/balances", headers={"Authorization": "Bearer k"})
        assert starting.status_code == 503
        assert starting.json()["type"].endswith("/starting")
