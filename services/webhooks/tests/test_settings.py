"""Settings: the WEBHOOKS_ prefix, the conventional port, and refusals that say what is accepted."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from riverbed_webhooks.bootstrap import address_policy, retry_schedule
from riverbed_webhooks.domain.retry import STANDARD_SCHEDULE_MS
from riverbed_webhooks.settings import WebhooksSettings


def test_defaults_are_the_conventions(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WEBHOOKS_PORT", "WEBHOOKS_API_KEY", "RIVERBED_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = WebhooksSettings()
    assert settings.port == 8002
    assert settings.request_timeout_s == 15.0
    assert retry_schedule(settings).max_attempts == 10
    assert settings.retry_schedule_ms == list(STANDARD_SCHEDULE_MS)
    assert settings.allowed_networks == []
    assert "payment.succeeded" in settings.source_streams
    assert settings.api_key is None


def test_variables_use_the_webhooks_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOKS_PORT", "9123")
    monkeypatch.setenv("WEBHOOKS_RETRY_SCHEDULE_MS", "[10, 20]")
    monkeypatch.setenv("WEBHOOKS_ALLOWED_NETWORKS", '["127.0.0.1/32"]')
    settings = WebhooksSettings()
    assert settings.port == 9123
    assert retry_schedule(settings).delays_ms == (10, 20)
    assert address_policy(settings).permits("127.0.0.1")


def test_the_api_key_is_webhooks_api_key_only_never_the_ingestion_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WEBHOOKS_API_KEY", raising=False)
    monkeypatch.setenv("RIVERBED_API_KEY", "ingestion")
    assert WebhooksSettings().api_key is None  # no fallback: the API answers 503
    monkeypatch.setenv("WEBHOOKS_API_KEY", "   ")
    assert WebhooksSettings().api_key is None  # blank is none, never an empty key
    monkeypatch.setenv("WEBHOOKS_API_KEY", "own")
    key = WebhooksSettings().api_key
    assert key is not None
    assert key.get_secret_value() == "own"
    monkeypatch.setenv("WEBHOOKS_API_KEY", "ingestion")
    with pytest.raises(ValidationError, match="must not be the ingestion key") as refused:
        WebhooksSettings()
    assert "'ingestion'" not in str(refused.value)


def test_a_bad_allow_list_entry_is_refused_with_an_example() -> None:
    with pytest.raises(ValidationError, match=r"127\.0\.0\.1/32"):
        WebhooksSettings(allowed_networks=["localhost"])


def test_the_delivery_backstop_must_exceed_the_schedule() -> None:
    with pytest.raises(ValidationError, match="max_deliveries"):
        WebhooksSettings(retry_schedule_ms=[1] * 20, max_deliveries=10)
