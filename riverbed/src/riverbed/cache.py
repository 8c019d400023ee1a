"""The runtime's one cache: namespaced entries in Redis, each with a TTL.

Cache for speed, never for correctness. What that means here:

- Every entry has a TTL: a namespace cannot be defined without one, and every
  write sets it (``SET … PX``). With ``maxmemory-policy volatile-lru`` Redis
  evicts cache entries and never stream data (streams have no TTL).
- Invalidation is explicit and cheap: :meth:`CacheNamespace.delete` removes one
  key; :meth:`CacheNamespace.invalidate_all` bumps the namespace version (one
  ``INCR``), so entries of older versions are never read again and expire by
  their TTL.
- A load never writes back a value that a change made while it ran has
  invalidated: a lookup that misses takes a *fill lease*, and the loaded value
  is written only if the lease is still there, under the version the lookup
  saw. A ``delete``, ``set`` or ``invalidate_all`` in the meantime wins.
- Concurrent misses for one key in one process load it once (single flight):
  every caller awaits the same load, a loader error reaches all of them and is
  not cached, and a cancelled caller does not cancel the load for the others.
- Redis failing while *reading* never fails the caller: the loader's value is
  returned, the error logged and counted (``riverbed_cache_errors_total``). An
  entry that no longer decodes (the model changed) is counted and reloaded.
  Explicit writes (``set``, ``delete``, ``invalidate_all``) do raise: a caller
  that invalidates on a change must know it failed, so its message is retried.

A lookup is one round trip. The namespace version is not cached, only guessed
(the last one seen): a Lua script reads the version key and, if the guess was
right, the entry. After an invalidation by another process the script answers
with the new version and the lookup is repeated. All keys of a namespace share
the hash tag ``{<namespace>}`` and every key a script touches is passed in
``KEYS``, so the scripts are Redis Cluster safe. Key names come from
:mod:`riverbed.keys`.

The version key has no TTL (one small key per namespace), so ``volatile-*``
eviction never removes it. An ``allkeys-*`` policy could evict it and bring old
entries back: don't use one for a Redis that holds the cache.
"""

from __future__ import annotations

import asyncio
import enum
import json
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from functools import partial
from typing import Any, Final, Generic, Literal, Protocol, TypeVar, overload

import structlog
from pydantic import TypeAdapter
from redis.exceptions import RedisError

from riverbed import keys
from riverbed.connection import Redis
from riverbed.errors import RiverbedError
from riverbed.metrics import CACHE_ERRORS, CACHE_HITS, CACHE_LOAD_SECONDS, CACHE_MISSES
from riverbed.scripts import RUNTIME_SCRIPTS, LuaScript

__all__ = ["Cache", "CacheNamespace", "Codec", "JsonCodec", "PydanticCodec", "Ttl"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: a TTL: a timedelta, or a number of seconds; at least 1 ms
Ttl = timedelta | float

_NAMESPACE_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
_LEASE_MAX_MS: Final = 60_000  # ms: a load slower than this is returned but not cached
_VERSION_ATTEMPTS: Final = 4  # tries of a script while other processes bump the version

# The cache's scripts; what each does, and its KEYS and ARGV, is at the top of its file in
# riverbed/lua/. The keyed ones (lookup, store, delete) first check the caller's guess of
# the namespace version and, on a wrong guess, do nothing and answer the current version.

#: a hit, or a miss that takes the fill lease
_LOOKUP: Final = LuaScript.load(RUNTIME_SCRIPTS, "cache_lookup")
#: write an entry, dropping the lease: a running load must not overwrite it
_STORE: Final = LuaScript.load(RUNTIME_SCRIPTS, "cache_store")
#: drop an entry and its lease
_DELETE: Final = LuaScript.load(RUNTIME_SCRIPTS, "cache_delete")
#: write a loaded value only if nothing changed the key since the lookup
_FILL: Final = LuaScript.load(RUNTIME_SCRIPTS, "cache_fill")


class Codec(Protocol[T]):
    """How the values of a namespace become bytes; ``decode`` raises ValueError on bad data."""

    def encode(self, value: T) -> bytes: ...

    def decode(self, data: bytes) -> T: ...


class JsonCodec:
    """Plain JSON values (dict, list, str, int, float, bool, None): the default codec."""

    def encode(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, data: bytes) -> Any:
        return json.loads(data)


class PydanticCodec(Generic[T]):
    """Any type pydantic validates (a model, ``list[Model]``…) as JSON.

    For a type that is not a class, name it twice for the type checker:
    ``PydanticCodec[Endpoint | None](Endpoint | None)`` (this caches "absent" too).
    """

    @overload
    def __init__(self, type_: type[T]) -> None: ...

    @overload
    def __init__(self, type_: Any) -> None: ...

    def __init__(self, type_: Any) -> None:
        self._adapter: TypeAdapter[T] = TypeAdapter(type_)

    def encode(self, value: T) -> bytes:
        return self._adapter.dump_json(value)

    def decode(self, data: bytes) -> T:
        return self._adapter.validate_json(data)


class _Undecodable(enum.Enum):
    ENTRY = enum.auto()


class _VersionChurn(RiverbedError, RedisError):
    """The namespace version moved on every attempt (invalidations in a tight loop)."""


def _to_ms(ttl: object, namespace: str) -> int:
    """``ttl`` in whole milliseconds, or a ValueError that says what is accepted."""
    accepted = "pass ttl=timedelta(...) or a number of seconds, at least 1 ms"
    if isinstance(ttl, timedelta):
        ms = ttl // timedelta(milliseconds=1)
    elif isinstance(ttl, int | float) and not isinstance(ttl, bool) and math.isfinite(ttl):
        ms = round(ttl * 1000)
    else:
        raise ValueError(
            f"cache namespace {namespace!r}: ttl={ttl!r} is not a TTL, and every cache "
            f"entry needs one: {accepted}"
        )
    if ms < 1:
        raise ValueError(
            f"cache namespace {namespace!r}: ttl={ttl!r} is not positive, and every cache "
            f"entry must expire: {accepted}"
        )
    return ms


class CacheNamespace(Generic[T]):
    """One kind of cached data (``webhook-endpoints``): its keys, TTL and codec.

    Made by :meth:`Cache.namespace`. Keys are any strings unique within the namespace.
    """

    def __init__(self, redis: Redis, name: str, ttl_ms: int, codec: Codec[T]) -> None:
        self.name = name
        self._redis = redis
        self._ttl_ms = ttl_ms
        self._codec = codec
        self._version = 0  # the last version seen: only a guess, every script checks it
        self._flights: dict[str, asyncio.Task[tuple[T, bool]]] = {}

    @property
    def ttl(self) -> timedelta:
        """How long entries live unless a call gives its own TTL."""
        return timedelta(milliseconds=self._ttl_ms)

    def __repr__(self) -> str:
        return f"CacheNamespace({self.name!r}, ttl={self.ttl})"

    async def get(self, key: str) -> T | None:
        """The cached value, or None if there is none (or Redis failed: logged and counted).

        Where None is a value of the namespace, use :meth:`get_or_load`, which can tell.
        """
        try:
            _, data = await self._lookup(key, lease="")
        except RedisError as error:
            self._failed("lookup", error)
            data = None
        value = _Undecodable.ENTRY if data is None else self._decode(data)
        if value is _Undecodable.ENTRY:
            CACHE_MISSES.labels(self.name).inc()
            return None
        CACHE_HITS.labels(self.name).inc()
        return value

    async def get_or_load(
        self, key: str, loader: Callable[[], Awaitable[T]], *, ttl: Ttl | None = None
    ) -> T:
        """The cached value, else ``await loader()``, cached for ``ttl`` (default: the namespace's).

        Concurrent calls for one key in this process share one lookup and one
        load (the first caller's ``loader`` and ``ttl``); a loader error reaches
        each of them and is not cached. Redis failing costs speed only.
        """
        ttl_ms = self._ttl_ms if ttl is None else _to_ms(ttl, self.name)
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.create_task(
                self._lookup_or_load(key, loader, ttl_ms), name=f"cache-load:{self.name}"
            )
            self._flights[key] = flight
            flight.add_done_callback(partial(self._landed, key))
        try:
            # shield: a cancelled caller leaves the flight running for the others
            value, hit = await asyncio.shield(flight)
        except Exception:
            CACHE_MISSES.labels(self.name).inc()
            raise
        (CACHE_HITS if hit else CACHE_MISSES).labels(self.name).inc()
        return value

    async def set(self, key: str, value: T, *, ttl: Ttl | None = None) -> None:
        """Cache ``value`` for ``ttl`` (default: the namespace's); raises RedisError on failure."""
        ttl_ms = self._ttl_ms if ttl is None else _to_ms(ttl, self.name)
        data = self._codec.encode(value)
        await self._write("set", _STORE, key, [data, ttl_ms])

    async def delete(self, key: str) -> None:
        """Forget ``key``, and keep a running load from caching it; raises RedisError on failure."""
        await self._write("delete", _DELETE, key, [])

    async def invalidate_all(self) -> None:
        """Forget every entry of the namespace (version bump); raises RedisError on failure."""
        try:
            self._version = int(await self._redis.incr(keys.cache_version_key(self.name)))
        except RedisError as error:
            self._failed("invalidate", error)
            raise
        log.info("cache namespace invalidated", namespace=self.name, version=self._version)

    # -- internals ---------------------------------------------------------------

    async def _lookup_or_load(
        self, key: str, loader: Callable[[], Awaitable[T]], ttl_ms: int
    ) -> tuple[T, bool]:
        """(cached value, True), else (loaded value, False) after filling the cache if safe."""
        lease = secrets.token_hex(8)
        undecodable = b""
        try:
            version, data = await self._lookup(key, lease=lease)
        except RedisError as error:
            self._failed("lookup", error)
            return await self._load(loader), False  # no lease taken: don't write
        if data is not None:
            value = self._decode(data)
            if value is not _Undecodable.ENTRY:
                return value, True
            lease, undecodable = "", data  # written by an older model: replace it if unchanged
        value = await self._load(loader)
        try:
            await _FILL(
                self._redis,
                keys=[
                    keys.cache_lease_key(self.name, version, key),
                    keys.cache_entry_key(self.name, version, key),
                ],
                args=[lease, self._codec.encode(value), ttl_ms, undecodable],
            )
        except RedisError as error:
            self._failed("fill", error)
        return value, False

    async def _load(self, loader: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            return await loader()
        finally:
            CACHE_LOAD_SECONDS.labels(self.name).observe(time.perf_counter() - started)

    async def _lookup(self, key: str, *, lease: str) -> tuple[int, bytes | None]:
        lease_ms = min(self._ttl_ms, _LEASE_MAX_MS)
        reply = await self._versioned(_LOOKUP, key, [lease, lease_ms])
        return int(reply[0]), reply[1] if len(reply) > 1 else None

    async def _write(
        self,
        operation: Literal["set", "delete"],
        script: LuaScript,
        key: str,
        args: Sequence[bytes | str | int],
    ) -> None:
        try:
            await self._versioned(script, key, args)
        except RedisError as error:
            self._failed(operation, error)
            raise

    async def _versioned(
        self, script: LuaScript, key: str, args: Sequence[bytes | str | int]
    ) -> list[Any]:
        """Run a version-checked script, again with the version Redis reports if it moved."""
        for _ in range(_VERSION_ATTEMPTS):
            version = self._version
            reply: list[Any] = await script(
                self._redis,
                keys=[
                    keys.cache_version_key(self.name),
                    keys.cache_entry_key(self.name, version, key),
                    keys.cache_lease_key(self.name, version, key),
                ],
                args=[version, *args],
            )
            current = int(reply[0])
            if current == version:
                return reply
            self._version = current
        raise _VersionChurn(
            f"cache namespace {self.name!r}: version changed on {_VERSION_ATTEMPTS} tries in a row"
        )

    def _decode(self, data: bytes) -> T | Literal[_Undecodable.ENTRY]:
        try:
            return self._codec.decode(data)
        except ValueError as error:
            # the message would quote the cached data, which may be personal or secret
            self._failed("decode", error, detail=type(error).__name__)
            return _Undecodable.ENTRY

    def _failed(self, operation: str, error: Exception, *, detail: str | None = None) -> None:
        CACHE_ERRORS.labels(self.name, operation).inc()
        # no key either: callers may key by something secret (an API key's digest, an email)
        log.warning(
            "cache operation failed",
            namespace=self.name,
            operation=operation,
            error=detail or f"{type(error).__name__}: {error}",
        )

    def _landed(self, key: str, flight: asyncio.Task[tuple[T, bool]]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # mark retrieved: every caller may have been cancelled


class Cache:
    """The runtime's cache over one Redis client.

    Made once in the composition root; each namespace is defined once, at start-up:

    >>> cache = Cache(redis)
    >>> endpoints = cache.namespace("webhook-endpoints", ttl=timedelta(minutes=5), model=Endpoint)
    >>> endpoint = await endpoints.get_or_load(endpoint_id, lambda: repository.get(endpoint_id))
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._namespaces: dict[str, CacheNamespace[Any]] = {}

    @overload
    def namespace(self, name: str, *, ttl: Ttl, model: type[T]) -> CacheNamespace[T]: ...

    @overload
    def namespace(self, name: str, *, ttl: Ttl, codec: Codec[T]) -> CacheNamespace[T]: ...

    @overload
    def namespace(self, name: str, *, ttl: Ttl) -> CacheNamespace[Any]: ...

    def namespace(
        self,
        name: str,
        *,
        ttl: Ttl,
        model: type[Any] | None = None,
        codec: Codec[Any] | None = None,
    ) -> CacheNamespace[Any]:
        """Define namespace ``name``: its TTL (required, at least 1 ms) and its values'
        pydantic ``model`` or ``codec`` (default: plain JSON).

        Names are 1-100 lowercase letters, digits, ``.``, ``_`` or ``-``.
        """
        if not isinstance(name, str) or not _NAMESPACE_NAME.fullmatch(name):
            raise ValueError(
                f"cache namespace name {name!r} is not valid: use 1-100 lowercase letters, "
                "digits, '.', '_' or '-', starting with a letter or digit ('webhook-endpoints')"
            )
        if name in self._namespaces:
            raise ValueError(
                f"cache namespace {name!r} is already defined: define each namespace once, "
                "at start-up, and share the object"
            )
        if model is not None and codec is not None:
            raise ValueError(f"cache namespace {name!r}: pass model= or codec=, not both")
        ttl_ms = _to_ms(ttl, name)
        if codec is None:
            codec = JsonCodec() if model is None else PydanticCodec(model)
        namespace: CacheNamespace[Any] = CacheNamespace(self.redis, name, ttl_ms, codec)
        self._namespaces[name] = namespace
        return namespace
