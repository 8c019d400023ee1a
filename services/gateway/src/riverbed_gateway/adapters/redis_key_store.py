"""API keys in Redis: authentication (configured keys first, stored ones cached for
``key_cache_s``), the start-up check of stored keys against configured ones, and the
management the CLI does (create, list, revoke). What a key is: :mod:`..domain.api_keys`."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

import structlog

from riverbed.connection import Redis
from riverbed.scripts import LuaScript
from riverbed_gateway import keys
from riverbed_gateway.domain.api_keys import (
    LOCAL_KEY_NAME,
    STORED_ID_PREFIX,
    ApiKey,
    ConfiguredKeys,
    KeyConfigurationError,
    check_scopes,
    decode_record,
    hash_key,
    new_key,
    stored_clashes,
    text,
    unauthorized,
    unmatched,
)

log = structlog.get_logger(__name__)

_CREATE: Final = LuaScript.load("riverbed_gateway.adapters.lua", "api_key_create")
#: unknown keys looked up are remembered too: past this many entries the cache starts over,
#: so that a flood of made-up keys cannot grow memory
_MAX_CACHED: Final = 10_000


class KeyStore:
    def __init__(self, redis: Redis, configured: ConfiguredKeys, *, cache_s: float) -> None:
        """``configured``: the keys of configuration, already checked; ``cache_s``: how
        long a key looked up in Redis is trusted, s."""
        self._redis = redis
        self._cache_s = cache_s
        self._configured = configured.by_digest
        self._configured_keys = configured
        self.configured_names = configured.names
        self._looked_up: dict[str, tuple[ApiKey | None, float]] = {}

    async def authenticate(self, authorization: str | None) -> ApiKey:
        """The key presented as ``Authorization: Bearer …``; 401 when missing or unknown."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        digest = hash_key(authorization[7:].strip())
        found = self._configured.get(digest)
        if found is None:
            found = await self._stored(digest)
        if found is None:
            raise unauthorized("invalid API key")
        return found

    async def _stored(self, digest: str) -> ApiKey | None:
        cached = self._looked_up.get(digest)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        raw = await self._redis.hget(keys.api_keys_key(), digest)
        found = decode_record(raw) if raw else None
        if len(self._looked_up) > _MAX_CACHED:
            self._looked_up.clear()
        self._looked_up[digest] = (found, now + self._cache_s)
        return found

    async def check_stored(self) -> None:
        """At start-up: the keys in Redis against the configured ones. A name that is also
        configured (or ``local``), or a configured secret stored again, raises
        :class:`KeyConfigurationError`; a stored pattern that matches no public type (written
        before public types existed) only grants nothing, and is logged."""
        stored = {
            text(digest): decode_record(raw)
            for digest, raw in (await self._redis.hgetall(keys.api_keys_key())).items()
        }
        for key in stored.values():
            dead = unmatched(key.scopes)
            if dead:
                log.warning(
                    "stored API key has scopes matching no public type: they grant nothing",
                    key_name=key.name,
                    key_id=key.id,
                    scopes=dead,
                )
        problems = stored_clashes(self._configured_keys, stored)
        if problems:
            raise KeyConfigurationError("API keys: " + "; ".join(problems))

    # -- management (the CLI) ---------------------------------------------------

    async def create(self, name: str, scopes: Iterable[str]) -> tuple[str, ApiKey]:
        """Store a new key under a fresh id; returns it in clear (the only time it is ever
        shown) and what it is. ``ValueError`` for a name already used by any source, or
        scopes :func:`check_scopes` refuses."""
        checked = check_scopes(scopes)
        if name == LOCAL_KEY_NAME:
            raise ValueError(f"{name!r} is the name of RIVERBED_API_KEY; pick another")
        if name in self.configured_names:
            raise ValueError(f"{name!r} is the name of a key in GATEWAY_API_KEYS; pick another")
        presented = new_key()
        key = ApiKey(STORED_ID_PREFIX + secrets.token_hex(8), name, checked)
        record = {
            "id": key.id,
            "name": name,
            "scopes": list(checked),
            "created_at": datetime.now(UTC).isoformat(),
        }
        outcome = await _CREATE(
            self._redis,
            keys=[keys.api_keys_key()],
            args=[hash_key(presented), json.dumps(record), name, key.id],
        )
        if text(outcome) == "name":
            raise ValueError(f"an API key named {name!r} exists; revoke it first or pick another")
        if text(outcome) != "ok":  # 64 random bits met another key's: never seen, but refused
            raise ValueError("the new key's id is taken; run the command again")
        return presented, key

    async def list(self) -> list[ApiKey]:
        stored = await self._redis.hgetall(keys.api_keys_key())
        return sorted((decode_record(raw) for raw in stored.values()), key=lambda key: key.name)

    async def revoke(self, name: str) -> bool:
        stored = await self._redis.hgetall(keys.api_keys_key())
        for digest, raw in stored.items():
            if decode_record(raw).name == name:
                await self._redis.hdel(keys.api_keys_key(), digest)
                return True
        return False
