"""API keys: stored hashed, each with the event-type patterns it may publish.

A key is 32 random bytes (``rbk_`` + URL-safe base64); only its SHA-256 is stored,
which is enough for a key of that entropy (no slow hash needed: nobody can guess it).
Keys live in configuration (loaded at start-up) and in Redis (managed with
``riverbed-gateway keys …``); lookups in Redis are trusted for ``key_cache_s``.
No key, clear or hashed, is ever logged.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase

from riverbed import keys
from riverbed.connection import Redis
from riverbed_gateway.problems import Problem
from riverbed_gateway.settings import GatewaySettings

KEY_PREFIX = "rbk_"


def hash_key(presented: str) -> str:
    return hashlib.sha256(presented.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ApiKey:
    name: str
    scopes: tuple[str, ...]

    def allows(self, event_type: str) -> bool:
        return any(fnmatchcase(event_type, pattern) for pattern in self.scopes)


class KeyStore:
    def __init__(self, redis: Callable[[], Redis], settings: GatewaySettings) -> None:
        self._redis = redis
        self._cache_s = settings.key_cache_s
        self._configured: dict[str, ApiKey] = {}
        for configured in settings.api_keys:
            digest = (
                hash_key(configured.key.get_secret_value())
                if configured.key is not None
                else configured.sha256
            )
            assert digest is not None  # one of the two is set: validated in settings
            self._configured[digest] = ApiKey(configured.name, tuple(configured.scopes))
        if settings.local_api_key is not None:
            digest = hash_key(settings.local_api_key.get_secret_value())
            self._configured[digest] = ApiKey("local", ("*",))
        self._looked_up: dict[str, tuple[ApiKey | None, float]] = {}

    async def authenticate(self, authorization: str | None) -> ApiKey:
        """The key presented as ``Authorization: Bearer …``; 401 when missing or unknown."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        digest = hash_key(authorization[7:].strip())
        found = self._configured.get(digest)
        if found is None:
            found = await self._stored(digest)
        if found is None:
            raise _unauthorized("invalid API key")
        return found

    async def _stored(self, digest: str) -> ApiKey | None:
        cached = self._looked_up.get(digest)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        raw = await self._redis().hget(keys.api_keys_key(), digest)
        found = _decode(raw) if raw else None
        if len(self._looked_up) > 10_000:  # bounded: unknown keys must not grow memory
            self._looked_up.clear()
        self._looked_up[digest] = (found, now + self._cache_s)
        return found

    # -- management (the CLI) ---------------------------------------------------

    async def create(self, name: str, scopes: Iterable[str]) -> str:
        """Store a new key; returns it in clear, the only time it is ever shown."""
        existing = await self.list()
        if any(key.name == name for key in existing):
            raise ValueError(f"an API key named {name!r} exists; revoke it first or pick another")
        presented = new_key()
        record = {
            "name": name,
            "scopes": list(scopes) or ["*"],
            "created_at": datetime.now(UTC).isoformat(),
        }
        await self._redis().hset(keys.api_keys_key(), hash_key(presented), json.dumps(record))
        return presented

    async def list(self) -> list[ApiKey]:
        stored = await self._redis().hgetall(keys.api_keys_key())
        return sorted((_decode(raw) for raw in stored.values()), key=lambda key: key.name)

    async def revoke(self, name: str) -> bool:
        stored = await self._redis().hgetall(keys.api_keys_key())
        for digest, raw in stored.items():
            if _decode(raw).name == name:
                await self._redis().hdel(keys.api_keys_key(), digest)
                return True
        return False


def _decode(raw: bytes | str) -> ApiKey:
    record = json.loads(raw)
    return ApiKey(record["name"], tuple(record["scopes"]))


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"}
    )


def forbidden(key: ApiKey, event_type: str) -> Problem:
    return Problem(
        403,
        "forbidden",
        "Forbidden",
        f"API key {key.name!r} may not publish {event_type!r}; its scopes are {list(key.scopes)}",
    )
