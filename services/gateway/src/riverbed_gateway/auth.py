"""API keys: stored hashed, each with an id of its own and the public types it may publish.

A key is 32 random bytes (``rbk_`` + URL-safe base64); only its SHA-256 is stored,
which is enough for a key of that entropy (no slow hash needed: nobody can guess it).
Keys live in configuration (loaded at start-up) and in Redis (managed with
``riverbed-gateway keys …``); lookups in Redis are trusted for ``key_cache_s``.
No key, clear or hashed, is ever logged.

**Identity.** Everything kept per key (idempotency records, the rate-limit bucket, the owner
of events kept for later, the event ids derived from a client's ids) is keyed by the key's
**id**, never by its name, and the ids of the three sources cannot meet:

- ``RIVERBED_API_KEY``: id ``local`` (its name is ``local`` too, reserved);
- a ``GATEWAY_API_KEYS`` entry: id ``config:<name>``, so its secret can be rotated under
  the same identity;
- a key created in Redis: a random id ``k-<16 hex digits>`` chosen when it is created, so a
  key revoked and created again under the same name is a new identity (the old one's
  delayed events and idempotency records stay out of its reach). A record written before
  ids existed reads as ``stored:<name>``.

Names are for people (``keys revoke NAME``, log lines, problem details) and are unique
across every source: a gateway refuses to start on a clash, naming it, and ``keys create``
refuses a clashing name.

**Scopes** narrow the public types (``EventSpec.access == "public"``) and nothing else: the
gateway refuses every other type whatever a key's scopes. A pattern that matches no public
type is refused where a key is created or configured.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any, Final

import structlog

from riverbed.connection import Redis
from riverbed.scripts import LuaScript
from riverbed_contracts.registry import REGISTRY
from riverbed_gateway import keys
from riverbed_gateway.problems import Problem
from riverbed_gateway.settings import ADMIN_KEY_SETTING, GatewaySettings

log = structlog.get_logger(__name__)

KEY_PREFIX: Final = "rbk_"
#: the name and id of RIVERBED_API_KEY; no other key may be named so
LOCAL_KEY_NAME: Final = "local"
CONFIG_ID_PREFIX: Final = "config:"
STORED_ID_PREFIX: Final = "k-"
LEGACY_ID_PREFIX: Final = "stored:"

#: the event types upstream systems may post, sorted: what scopes narrow
PUBLIC_TYPES: Final = tuple(t for t, spec in REGISTRY.items() if spec.access == "public")

#: Store a new key unless its name or id is taken. KEYS: the key hash. ARGV: digest, record
#: (JSON), name, id. Returns 'name' or 'id' when taken (nothing written), else 'ok'.
_CREATE = LuaScript("""
for _, raw in ipairs(redis.call('HVALS', KEYS[1])) do
  local record = cjson.decode(raw)
  if record['name'] == ARGV[3] then return 'name' end
  if record['id'] == ARGV[4] then return 'id' end
end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 'id' end
return 'ok'
""")


def hash_key(presented: str) -> str:
    return hashlib.sha256(presented.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def scope_patterns() -> list[str]:
    """The scopes a key may be given: ``*`` (every public type), one pattern per domain of
    public types (``payment.*``), and each public type."""
    domains = sorted({f"{event_type.split('.', 1)[0]}.*" for event_type in PUBLIC_TYPES})
    return ["*", *domains, *PUBLIC_TYPES]


def scopes_help() -> str:
    return "scopes are patterns of public event types: " + ", ".join(
        repr(pattern) for pattern in scope_patterns()
    )


class ScopeError(ValueError):
    """Scopes that cannot be given to a key: none, or a pattern no public type matches."""


def check_scopes(patterns: Iterable[str]) -> tuple[str, ...]:
    """``patterns``, each matching at least one public type; :class:`ScopeError` otherwise."""
    given = tuple(patterns)
    if not given:
        raise ScopeError(f"give at least one scope; {scopes_help()}")
    dead = [p for p in given if not any(fnmatchcase(t, p) for t in PUBLIC_TYPES)]
    if dead:
        raise ScopeError(
            f"scope {', '.join(map(repr, dead))} matches no public event type (only public "
            f"types can be posted, whatever the scopes); {scopes_help()}"
        )
    return given


def _allowed_types(scopes: tuple[str, ...]) -> frozenset[str]:
    return frozenset(t for t in PUBLIC_TYPES if any(fnmatchcase(t, p) for p in scopes))


@dataclass(frozen=True)
class ApiKey:
    """An authenticated key: ``id`` is its identity (see the module), ``name`` for people."""

    id: str
    name: str
    scopes: tuple[str, ...]
    #: the public types the scopes allow, computed once (a lookup per event, not fnmatch)
    types: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", _allowed_types(self.scopes))

    def allows(self, event_type: str) -> bool:
        return event_type in self.types


class KeyConfigurationError(ValueError):
    """Keys that cannot be told apart, or scopes that grant nothing: the gateway refuses to
    start. The message names the clash, never a key."""


class KeyStore:
    def __init__(self, redis: Callable[[], Redis], settings: GatewaySettings) -> None:
        """The configured keys, checked (:class:`KeyConfigurationError`): names unique and
        not ``local``, no secret given twice (nor as the admin key), every scope matching a
        public type."""
        self._redis = redis
        self._cache_s = settings.key_cache_s
        self._configured: dict[str, ApiKey] = {}  # digest -> key
        problems: list[str] = []
        names = Counter(configured.name for configured in settings.api_keys)
        for name, count in sorted(names.items()):
            if count > 1:
                problems.append(f"GATEWAY_API_KEYS names {name!r} {count} times")
        if LOCAL_KEY_NAME in names:
            problems.append(
                f"GATEWAY_API_KEYS names a key {LOCAL_KEY_NAME!r}, the name of RIVERBED_API_KEY"
            )
        sources: dict[str, str] = {}  # digest -> where it was given, to name a reused secret
        for configured in settings.api_keys:
            digest = (
                hash_key(configured.key.get_secret_value())
                if configured.key is not None
                else configured.sha256
            )
            assert digest is not None  # one of the two is set: validated in settings
            where = f"GATEWAY_API_KEYS entry {configured.name!r}"
            if digest in sources:
                problems.append(f"{where} has the same key as {sources[digest]}")
            sources.setdefault(digest, where)
            try:
                scopes = check_scopes(configured.scopes)
            except ScopeError as error:
                problems.append(f"{where}: {error}")
                continue
            self._configured[digest] = ApiKey(
                CONFIG_ID_PREFIX + configured.name, configured.name, scopes
            )
        if settings.local_api_key is not None:
            digest = hash_key(settings.local_api_key.get_secret_value())
            if digest in sources:
                problems.append(f"RIVERBED_API_KEY is the same key as {sources[digest]}")
            sources.setdefault(digest, "RIVERBED_API_KEY")
            self._configured[digest] = ApiKey(LOCAL_KEY_NAME, LOCAL_KEY_NAME, ("*",))
        if settings.admin_api_key is not None:
            digest = hash_key(settings.admin_api_key.get_secret_value())
            if digest in sources:
                problems.append(
                    f"{ADMIN_KEY_SETTING} is the same key as {sources[digest]}: the admin API "
                    "needs a key of its own, which no ingestion client holds"
                )
        if problems:
            raise KeyConfigurationError("API keys: " + "; ".join(problems))
        self.configured_names = frozenset(key.name for key in self._configured.values())
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

    async def check_stored(self) -> None:
        """At start-up: the keys in Redis against the configured ones. A name that is also
        configured (or ``local``), or a configured secret stored again, raises
        :class:`KeyConfigurationError`; a stored pattern that matches no public type (written
        before public types existed) only grants nothing, and is logged."""
        stored = await self._redis().hgetall(keys.api_keys_key())
        problems: list[str] = []
        taken = self.configured_names | {LOCAL_KEY_NAME}
        for digest, raw in sorted(stored.items()):
            key = _decode(raw)
            if key.name in taken:
                problems.append(
                    f"the key {key.name!r} in Redis has the name of a configured key "
                    f"(GATEWAY_API_KEYS or RIVERBED_API_KEY); revoke it "
                    f"('riverbed-gateway keys revoke {key.name}') or rename the configured one"
                )
            if _text(digest) in self._configured:
                problems.append(f"the key {key.name!r} in Redis is also a configured key")
            dead = [p for p in key.scopes if not any(fnmatchcase(t, p) for t in PUBLIC_TYPES)]
            if dead:
                log.warning(
                    "stored API key has scopes matching no public type: they grant nothing",
                    key_name=key.name,
                    key_id=key.id,
                    scopes=dead,
                )
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
            self._redis(),
            keys=[keys.api_keys_key()],
            args=[hash_key(presented), json.dumps(record), name, key.id],
        )
        if _text(outcome) == "name":
            raise ValueError(f"an API key named {name!r} exists; revoke it first or pick another")
        if _text(outcome) != "ok":  # 64 random bits met another key's: never seen, but refused
            raise ValueError("the new key's id is taken; run the command again")
        return presented, key

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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(raw: bytes | str) -> ApiKey:
    record: Mapping[str, Any] = json.loads(raw)
    name = str(record["name"])
    key_id = record.get("id") or LEGACY_ID_PREFIX + name  # written before key ids existed
    return ApiKey(str(key_id), name, tuple(record["scopes"]))


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
