"""Settings from `EMAIL_*` variables, refused at start-up when they cannot work."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from riverbed_email.bootstrap import create_service, delivery_policy
from riverbed_email.service_layer.delivery import GRACE_DELIVERIES
from riverbed_email.settings import DEFAULT_RETRY_SCHEDULE_MS, EmailSettings


def test_settings_default_to_the_conventional_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMAIL_PORT", raising=False)
    assert EmailSettings().port == 8001


def test_settings_read_the_email_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_PORT", "9123")
    monkeypatch.setenv("EMAIL_SMTP_HOST", "relay.internal")
    monkeypatch.setenv("EMAIL_RETRY_SCHEDULE_MS", "[1000, 5000]")
    monkeypatch.setenv("EMAIL_METRICS_DOMAINS", '["Example.COM"]')
    settings = EmailSettings()
    assert (settings.port, settings.smtp_host) == (9123, "relay.internal")
    assert settings.retry_schedule_ms == [1000, 5000]
    assert settings.metrics_domains == ["example.com"]


def test_the_default_retry_schedule_follows_smtp_practice() -> None:
    settings = EmailSettings()
    assert settings.retry_schedule_ms == list(DEFAULT_RETRY_SCHEDULE_MS)
    assert settings.retry_schedule_ms[0] >= 60_000
    # RFC 5321 §4.5.4.1: keep trying for 4-5 days before giving up (here about 4.3)
    delays = settings.retry_schedule_ms
    total_ms = sum(delays[min(i, len(delays) - 1)] for i in range(settings.max_attempts - 1))
    assert total_ms > 4 * 24 * 3600 * 1000


@pytest.mark.parametrize(("security", "port"), [("starttls", 587), ("tls", 465), ("none", 25)])
def test_the_smtp_port_defaults_by_security(security: str, port: int) -> None:
    assert EmailSettings(smtp_security=security).effective_smtp_port == port


def test_the_envelope_sender_and_message_id_domain_come_from_the_from_address() -> None:
    settings = EmailSettings(from_address="Shop <orders@shop.example>")
    assert settings.envelope_sender == "orders@shop.example"
    assert settings.effective_message_id_domain == "shop.example"


def test_auth_over_plain_text_is_refused() -> None:
    with pytest.raises(ValidationError, match="EMAIL_SMTP_SECURITY"):
        EmailSettings(smtp_security="none", smtp_username="u", smtp_password="p")


def test_a_username_without_a_password_is_refused() -> None:
    with pytest.raises(ValidationError, match="EMAIL_SMTP_PASSWORD"):
        EmailSettings(smtp_username="u")


def test_a_templates_directory_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="EMAIL_TEMPLATES_DIR"):
        EmailSettings(templates_dir=tmp_path / "missing")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://x.test/u", "must be an https:// URL"),
        ("https://x.test/u?e={email}", "unknown placeholders"),
        ("https://x.test/u?t={token}", "EMAIL_UNSUBSCRIBE_SECRET"),
    ],
)
def test_an_unsubscribe_url_that_cannot_work_is_refused(url: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EmailSettings(unsubscribe_url=url)


def test_a_from_address_without_an_address_is_refused() -> None:
    with pytest.raises(ValidationError, match="EMAIL_FROM_ADDRESS"):
        EmailSettings(from_address="Just A Name")


def test_the_password_never_shows_in_the_settings_repr() -> None:
    settings = EmailSettings(smtp_username="u", smtp_password="hunter2-secret")
    assert "hunter2-secret" not in repr(settings)


def test_the_service_gives_up_after_email_max_attempts_not_the_runtime_default() -> None:
    settings = EmailSettings(max_attempts=9)
    service = create_service(settings)
    assert delivery_policy(settings).max_attempts == 9  # what the lifespan wires

    # the runtime's limit leaves room for a last attempt cut off before its outcome
    assert service.consumer_settings.max_deliveries == 9 + GRACE_DELIVERIES
    [subscription] = service.subscriptions
    assert subscription.stream == "email.requested"
    assert subscription.backoff is not None
    assert list(subscription.backoff.schedule) == list(DEFAULT_RETRY_SCHEDULE_MS)


async def test_liveness_answers_before_redis_is_connected() -> None:
    service = create_service(EmailSettings())
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"]["ok"] is False
