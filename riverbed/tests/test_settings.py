"""Settings come from the environment, validated at start-up with clear errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from riverbed.connection import redacted_url
from riverbed.settings import AdminApiSettings, ConsumerSettings, RedisSettings


def test_consumer_settings_read_their_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVERBED_CONSUMER_MAX_DELIVERIES", "9")
    monkeypatch.setenv("RIVERBED_CONSUMER_VISIBILITY_TIMEOUT_MS", "30000")
    settings = ConsumerSettings()
    assert settings.max_deliveries == 9
    assert settings.keepalive_interval_ms == 10_000


def test_nonsense_consumer_settings_are_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RIVERBED_CONSUMER_MAX_DELIVERIES", "0")
    with pytest.raises(ValidationError, match="max_deliveries"):
        ConsumerSettings()


def test_redis_url_comes_from_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://app:pw@cache.internal:6380/2")
    assert RedisSettings().url.get_secret_value() == "rediss://app:pw@cache.internal:6380/2"


def test_redis_url_is_a_secret_in_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://app:hunter2@localhost:6379/0")
    assert "hunter2" not in repr(RedisSettings())


def test_an_unknown_redis_scheme_names_the_accepted_ones() -> None:
    with pytest.raises(ValidationError, match=r"redis://, rediss:// or unix://"):
        RedisSettings(url="http://localhost:6379")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://app:hunter2@h:6379/0", "redis://app:***@h:6379/0"),
        ("redis://:hunter2@h:6379", "redis://***@h:6379"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_redacted_url_hides_the_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_a_cache_url_of_an_unknown_scheme_is_refused_by_its_own_name() -> None:
    with pytest.raises(ValidationError, match="REDIS_CACHE_URL scheme 'http' is not supported"):
        RedisSettings(url="redis://127.0.0.1:6379/0", cache_url="http://cache:6379")
    assert RedisSettings(url="redis://h:1/0").cache_url is None


class _AdminSettings(AdminApiSettings):
    model_config = SettingsConfigDict(env_prefix="SOMESERVICE_")


def test_an_admin_api_key_is_never_the_ingestion_key_and_blank_is_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RIVERBED_API_KEY", "ingestion")
    monkeypatch.setenv("SOMESERVICE_API_KEY", " ")
    assert _AdminSettings().api_key is None
    monkeypatch.setenv("SOMESERVICE_API_KEY", "ingestion")
    with pytest.raises(ValidationError, match="SOMESERVICE_API_KEY must not be the ingestion"):
        _AdminSettings()
