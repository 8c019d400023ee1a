"""API keys: stored hashed, managed with the CLI, scoped, revocable."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from riverbed import keys
from riverbed.testing import sync_redis_client
from riverbed_gateway.auth import KeyStore, hash_key
from riverbed_gateway.cli import main

pytestmark = pytest.mark.integration


def email() -> dict[str, Any]:
    return {
        "type": "email.requested.v1",
        "data": {"to": "a@example.com", "subject": "s", "text": "t"},
    }


@pytest.fixture
def own_env(own_redis: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """The CLI talks to REDIS_URL: point it at a private Redis (it writes the key store)."""
    monkeypatch.setenv("REDIS_URL", own_redis.url)
    url: str = own_redis.url
    return url


def test_cli_creates_lists_and_revokes_keys_storing_only_hashes(
    own_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "ci-bot", "--scope", "email.*"]) == 0
    presented = capsys.readouterr().out.strip()
    assert presented.startswith("rbk_")

    stored = sync_redis_client(own_env).hgetall(keys.api_keys_key())
    assert list(stored) == [hash_key(presented).encode()]
    assert presented not in json.dumps({k.decode(): v.decode() for k, v in stored.items()})

    assert main(["keys", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"name": "ci-bot", "scopes": ["email.*"]}]

    assert main(["keys", "create", "ci-bot"]) == 1
    assert "exists" in capsys.readouterr().err

    assert main(["keys", "revoke", "ci-bot"]) == 0
    assert sync_redis_client(own_env).hlen(keys.api_keys_key()) == 0
    assert main(["keys", "revoke", "ci-bot"]) == 1


def test_cli_refuses_a_bad_key_name(own_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "no spaces"]) == 2
    assert "letters, digits" in capsys.readouterr().err


async def test_a_stored_key_authenticates_within_its_scopes_until_revoked(
    start_gateway: Any,
) -> None:
    service, http = await start_gateway(key_cache_s=0)
    store = KeyStore(lambda: service.redis, service.settings)  # type: ignore[arg-type]
    name = f"bot-{uuid.uuid4().hex[:8]}"
    presented = await store.create(name, ["email.*"])
    auth = {"Authorization": f"Bearer {presented}"}
    try:
        assert (await http.post("/v1/events", json=email(), headers=auth)).status_code == 202
    finally:
        assert await store.revoke(name)
    assert (await http.post("/v1/events", json=email(), headers=auth)).status_code == 401
