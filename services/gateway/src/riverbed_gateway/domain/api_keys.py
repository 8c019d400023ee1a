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
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Final

from riverbed.errors import RiverbedError
from riverbed.problems import Problem
from riverbed_contracts.registry import REGISTRY
from riverbed_gateway.settings import ADMIN_KEY_SETTING, GatewaySettings

KEY_PREFIX: Final = "rbk_"
#: the name and id of RIVERBED_API_KEY; no other key may be named so
LOCAL_KEY_NAME: Final = "local"
CONFIG_ID_PREFIX: Final = "config:"
STORED_ID_PREFIX: Final = "k-"
LEGACY_ID_PREFIX: Final = "stored:"

#: the event types upstream systems may post, sorted: what scopes narrow
PUBLIC_TYPES: Final = tuple(t for t, spec in REGISTRY.items() if spec.access == "public")


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


class ScopeError(RiverbedError, ValueError):
    """Scopes that cannot be given to a key: none, or a pattern no public type matches."""


def check_scopes(patterns: Iterable[str]) -> tuple[str, ...]:
    """``patterns``, each matching at least one public type; :class:`ScopeError` otherwise."""
    given = tuple(patterns)
    if not given:
        raise ScopeError(f"give at least one scope; {scopes_help()}")
    dead = unmatched(given)
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


class KeyConfigurationError(RiverbedError, ValueError):
    """Keys that cannot be told apart, or scopes that grant nothing: the gateway refuses to
    start. The message names the clash, never a key."""


@dataclass(frozen=True)
class ConfiguredKeys:
    """The keys of configuration, checked: digest (SHA-256 hex) -> key."""

    by_digest: Mapping[str, ApiKey]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(key.name for key in self.by_digest.values())


def configured_keys(settings: GatewaySettings) -> ConfiguredKeys:
    """The configured keys, checked (:class:`KeyConfigurationError`): names unique and not
    ``local``, no secret given twice (nor as the admin key), every scope matching a public
    type."""
    problems: list[str] = []
    names = Counter(configured.name for configured in settings.api_keys)
    for name, count in sorted(names.items()):
        if count > 1:
            problems.append(f"GATEWAY_API_KEYS names {name!r} {count} times")
    if LOCAL_KEY_NAME in names:
        problems.append(
            f"GATEWAY_API_KEYS names a key {LOCAL_KEY_NAME!r}, the name of RIVERBED_API_KEY"
        )
    by_digest: dict[str, ApiKey] = {}
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
        by_digest[digest] = ApiKey(CONFIG_ID_PREFIX + configured.name, configured.name, scopes)
    problems += _special_keys(settings, sources, by_digest)
    if problems:
        raise KeyConfigurationError("API keys: " + "; ".join(problems))
    return ConfiguredKeys(by_digest)


def _special_keys(
    settings: GatewaySettings, sources: dict[str, str], by_digest: dict[str, ApiKey]
) -> list[str]:
    """RIVERBED_API_KEY (added to ``by_digest``) and the admin key, against the others."""
    problems: list[str] = []
    if settings.local_api_key is not None:
        digest = hash_key(settings.local_api_key.get_secret_value())
        if digest in sources:
            problems.append(f"RIVERBED_API_KEY is the same key as {sources[digest]}")
        sources.setdefault(digest, "RIVERBED_API_KEY")
        by_digest[digest] = ApiKey(LOCAL_KEY_NAME, LOCAL_KEY_NAME, ("*",))
    if settings.admin_api_key is not None:
        digest = hash_key(settings.admin_api_key.get_secret_value())
        if digest in sources:
            problems.append(
                f"{ADMIN_KEY_SETTING} is the same key as {sources[digest]}: the admin API "
                "needs a key of its own, which no ingestion client holds"
            )
    return problems


def stored_clashes(configured: ConfiguredKeys, stored: Mapping[str, ApiKey]) -> list[str]:
    """What is wrong with the keys in Redis (``stored``: digest -> key) next to the
    configured ones: a name also configured (or ``local``), a configured secret stored
    again. Two keys of one name would be told apart by nobody reading a log or revoking."""
    problems: list[str] = []
    taken = configured.names | {LOCAL_KEY_NAME}
    for digest, key in sorted(stored.items()):
        if key.name in taken:
            problems.append(
                f"the key {key.name!r} in Redis has the name of a configured key "
                f"(GATEWAY_API_KEYS or RIVERBED_API_KEY); revoke it "
                f"('riverbed-gateway keys revoke {key.name}') or rename the configured one"
            )
        if digest in configured.by_digest:
            problems.append(f"the key {key.name!r} in Redis is also a configured key")
    return problems


def unmatched(patterns: Iterable[str]) -> list[str]:
    """The scope patterns that match no public type (they grant nothing)."""
    return [p for p in patterns if not any(fnmatchcase(t, p) for t in PUBLIC_TYPES)]


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def decode_record(raw: bytes | str) -> ApiKey:
    """A key as stored in Redis (JSON ``{id, name, scopes, created_at}``)."""
    record: Mapping[str, Any] = json.loads(raw)
    name = str(record["name"])
    key_id = record.get("id") or LEGACY_ID_PREFIX + name  # written before key ids existed
    return ApiKey(str(key_id), name, tuple(record["scopes"]))


def unauthorized(detail: str) -> Problem:
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
