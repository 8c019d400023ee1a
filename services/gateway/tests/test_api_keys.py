"""API keys: stored hashed, managed with the CLI, scoped to public types, revocable, and
told apart by an id of their own: no two sources of keys share a name or an identity."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from riverbed import keys
from riverbed.delay import DelayStore
from riverbed.settings import RedisSettings
from riverbed.testing import RedisServer, free_port, sync_redis_client
from riverbed_gateway.bootstrap import create_service
from riverbed_gateway.cli import main
from riverbed_gateway.domain.api_keys import PUBLIC_TYPES, KeyConfigurationError, hash_key
from riverbed_gateway.keys import api_keys_key, rate_limit_key
from riverbed_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration


def email() -> dict[str, Any]:
    return {
        "type": "email.requested.v1",
        "data": {"to": "a@example.com", "subject": "s", "text": "t"},
    }


@pytest.fixture
def own_env(own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The CLI talks to REDIS_URL: point it at a private Redis (it writes the key store),
    with no key configured in this environment unless a test sets one."""
    monkeypatch.setenv("REDIS_URL", own_redis.url)
    for variable in ("GATEWAY_API_KEYS", "RIVERBED_API_KEY", "GATEWAY_ADMIN_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    url: str = own_redis.url
    return url


def test_cli_creates_lists_and_revokes_keys_storing_only_hashes(
    own_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "ci-bot", "--scope", "email.*"]) == 0
    presented = capsys.readouterr().out.strip()
    assert presented.startswith("rbk_")

    stored = sync_redis_client(own_env).hgetall(api_keys_key())
    assert list(stored) == [hash_key(presented).encode()]
    assert presented not in json.dumps({k.decode(): v.decode() for k, v in stored.items()})

    assert main(["keys", "list", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["name"] == "ci-bot"
    assert listed["scopes"] == ["email.*"]
    assert listed["id"].startswith("k-"), "a random id of its own, not the name"

    assert main(["keys", "create", "ci-bot", "--scope", "email.*"]) == 1
    assert "exists" in capsys.readouterr().err

    assert main(["keys", "revoke", "ci-bot"]) == 0
    assert sync_redis_client(own_env).hlen(api_keys_key()) == 0
    assert main(["keys", "revoke", "ci-bot"]) == 1


def test_cli_refuses_a_bad_key_name(own_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "no spaces", "--scope", "email.*"]) == 2
    assert "letters, digits" in capsys.readouterr().err


def test_cli_refuses_a_key_without_scopes_saying_which_exist(
    own_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "no-scopes"]) == 2
    said = capsys.readouterr().err
    assert "--scope" in said
    for scope in ("'*'", "'payment.*'", "'email.*'", *(repr(t) for t in PUBLIC_TYPES)):
        assert scope in said
    assert "webhook" not in said, "no internal type is offered"
    assert sync_redis_client(own_env).hlen(api_keys_key()) == 0


@pytest.mark.parametrize(
    "scope", ["webhook.*", "payment.recorded.v1", "email.sent.v1", "nothing.at.all"]
)
def test_cli_refuses_a_scope_no_public_type_matches(
    own_env: str, capsys: pytest.CaptureFixture[str], scope: str
) -> None:
    assert main(["keys", "create", "bot", "--scope", "email.*", "--scope", scope]) == 2
    said = capsys.readouterr().err
    assert f"{scope!r} matches no public event type" in said
    assert "'payment.*'" in said, "the scopes that exist are listed"
    assert sync_redis_client(own_env).hlen(api_keys_key()) == 0


def test_cli_refuses_the_name_of_a_configured_key(
    own_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["keys", "create", "local", "--scope", "*"]) == 1
    assert "RIVERBED_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("GATEWAY_API_KEYS", json.dumps([{"name": "billing", "key": "b-secret"}]))
    assert main(["keys", "create", "billing", "--scope", "payment.*"]) == 1
    assert "GATEWAY_API_KEYS" in capsys.readouterr().err
    assert sync_redis_client(own_env).hlen(api_keys_key()) == 0


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (
            {"api_keys": [{"name": "mailer", "key": "one"}, {"name": "mailer", "key": "two"}]},
            "GATEWAY_API_KEYS names 'mailer' 2 times",
        ),
        (
            {"api_keys": [{"name": "local", "key": "one"}], "local_api_key": "two"},
            "names a key 'local', the name of RIVERBED_API_KEY",
        ),
        (
            {"api_keys": [{"name": "local", "key": "one"}]},
            "names a key 'local', the name of RIVERBED_API_KEY",
        ),
        (
            {"api_keys": [{"name": "a", "key": "same"}, {"name": "b", "key": "same"}]},
            "entry 'b' has the same key as GATEWAY_API_KEYS entry 'a'",
        ),
        (
            {"api_keys": [{"name": "a", "key": "same"}], "local_api_key": "same"},
            "RIVERBED_API_KEY is the same key as GATEWAY_API_KEYS entry 'a'",
        ),
        (
            {"local_api_key": "same", "admin_api_key": "same"},
            "GATEWAY_ADMIN_API_KEY is the same key as RIVERBED_API_KEY",
        ),
        (
            {"api_keys": [{"name": "hooks", "key": "k", "scopes": ["webhook.*"]}]},
            "entry 'hooks': scope 'webhook.*' matches no public event type",
        ),
    ],
    ids=[
        "duplicate-name",
        "local-name",
        "local-name-without-local-key",
        "same-secret",
        "same-as-local",
        "admin-is-ingestion",
        "dead-scope",
    ],
)
def test_clashing_configured_keys_are_refused_at_start_up(
    settings: dict[str, Any], named: str
) -> None:
    with pytest.raises(KeyConfigurationError) as refused:
        create_service(GatewaySettings(**settings))
    assert named in str(refused.value)
    for secret in ("one", "two", "same"):
        assert f"'{secret}'" not in str(refused.value), "no key is ever shown"


def test_the_cli_serving_refuses_to_start_with_a_clear_message(
    own_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_PORT", str(free_port()))
    monkeypatch.setenv(
        "GATEWAY_API_KEYS",
        json.dumps([{"name": "mailer", "key": "one"}, {"name": "mailer", "key": "two"}]),
    )
    assert main([]) == 2
    said = capsys.readouterr().err
    assert "refusing to start" in said
    assert "'mailer' 2 times" in said
    assert "Traceback" not in said


async def test_a_key_in_redis_with_a_configured_name_stops_the_gateway_at_start_up(
    own_redis: RedisServer,
) -> None:
    settings = GatewaySettings(
        api_keys=[{"name": "mailer", "key": "configured-secret", "scopes": ["email.*"]}]
    )
    client = sync_redis_client(own_redis.url)
    # as an older CLI could have stored it, before it checked configured names
    client.hset(
        api_keys_key(),
        hash_key("stored-secret"),
        json.dumps({"name": "mailer", "scopes": ["*"]}),
    )
    service = create_service(settings, redis_settings=RedisSettings(url=own_redis.url))
    with pytest.raises(KeyConfigurationError, match="the key 'mailer' in Redis has the name"):
        await service.start()
    with pytest.raises(RuntimeError, match="not started"):
        _ = service.redis  # what start() opened is closed again

    client.hdel(api_keys_key(), hash_key("stored-secret"))
    service = create_service(settings, redis_settings=RedisSettings(url=own_redis.url))
    await service.start()
    await service.stop()


async def test_a_stored_key_authenticates_within_its_scopes_until_revoked(
    start_gateway: Any,
) -> None:
    service, http = await start_gateway(key_cache_s=0)
    store = service.container.keys
    name = f"bot-{uuid.uuid4().hex[:8]}"
    presented, _ = await store.create(name, ["email.*"])
    auth = {"Authorization": f"Bearer {presented}"}
    try:
        assert (await http.post("/v1/events", json=email(), headers=auth)).status_code == 202
    finally:
        assert await store.revoke(name)
    assert (await http.post("/v1/events", json=email(), headers=auth)).status_code == 401


async def test_a_key_created_again_under_a_revoked_name_is_a_new_identity(
    start_gateway: Any,
) -> None:
    """Revoked and created again, a name does not hand the old key's events to the new one:
    its events kept for later, its idempotency records and its derived ids stay behind."""
    service, http = await start_gateway(key_cache_s=0)
    store = service.container.keys
    name = f"tenant-{uuid.uuid4().hex[:8]}"
    first, old = await store.create(name, ["email.*"])
    body = {**email(), "id": "order-1", "delay": 3600}
    kept = await http.post("/v1/events", json=body, headers={"Authorization": f"Bearer {first}"})
    assert kept.status_code == 202, kept.text
    assert await store.revoke(name)

    second, new = await store.create(name, ["email.*"])
    auth = {"Authorization": f"Bearer {second}"}
    try:
        assert new.id != old.id
        assert (await http.get("/v1/scheduled/order-1", headers=auth)).status_code == 404
        assert (await http.delete("/v1/scheduled/order-1", headers=auth)).status_code == 404
        again = await http.post("/v1/events", json={**body, "delay": 60}, headers=auth)
        assert again.status_code == 202
        assert "idempotent-replayed" not in again.headers, "not the old key's record"
        assert again.json()["event_id"] != kept.json()["event_id"]
    finally:
        await store.revoke(name)
        for event_id, owner in (
            (kept.json()["event_id"], old.id),
            (again.json()["event_id"], new.id),
        ):
            await DelayStore(service.redis, "email.requested").cancel(event_id, owner=owner)


async def test_a_key_stored_before_key_ids_gets_one_from_its_name(start_gateway: Any) -> None:
    service, http = await start_gateway(key_cache_s=0)
    name = f"legacy-{uuid.uuid4().hex[:8]}"
    secret = f"rbk_{uuid.uuid4().hex}"
    await service.redis.hset(
        api_keys_key(), hash_key(secret), json.dumps({"name": name, "scopes": ["email.*"]})
    )
    try:
        response = await http.post(
            "/v1/events", json=email(), headers={"Authorization": f"Bearer {secret}"}
        )
        assert response.status_code == 202, response.text
        stored = await service.redis.xrange(
            keys.stream_key("email.requested"),
            response.json()["entry_id"],
            response.json()["entry_id"],
        )
        assert json.loads(stored[0][1][b"event"])["source"] == (
            f"urn:riverbed:gateway:stored:{name}"
        )
    finally:
        await service.redis.hdel(api_keys_key(), hash_key(secret))
        await service.redis.delete(rate_limit_key(f"stored:{name}"))
