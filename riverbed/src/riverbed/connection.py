"""The Redis connection: created from a URL at start-up, closed at shutdown.

Never at import time. ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs are
accepted, with an ACL user and password in the URL (``redis://user:pass@host``). With
``REDIS_CLUSTER=true`` the URL names one node of a Redis Cluster. With ``REDIS_SENTINELS``
the master is the one the Sentinels name, found again after a failover (redis-py's own
Sentinel support); the URL then gives its TLS, user, password and database only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import redis.asyncio as redis_async
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff

from riverbed.redis_timing import TimedRedis, TimedRedisCluster
from riverbed.settings import RedisSettings

#: the binary client type used throughout: keys and values stay bytes on the hot path
Redis = redis_async.Redis


def connect(
    settings: RedisSettings, *, decode_responses: bool = False, cache: bool = False
) -> Redis:
    """A client pool for ``settings.url`` (``cache=True``: for ``settings.cache_url`` when
    one is set); the first command opens the connection.

    With ``settings.sentinels`` (and no cache URL of its own) it is a client of the master
    the Sentinels name. With ``settings.cluster`` it is a Redis Cluster client. It is typed
    as :data:`Redis` because the runtime only uses commands both have: single-key commands
    and scripts whose keys share one hash tag (every key of a stream does, see
    :mod:`riverbed.keys`).
    """
    own_cache = cache and settings.cache_url is not None
    url = (
        settings.cache_url if own_cache and settings.cache_url else settings.url
    ).get_secret_value()
    if settings.sentinels and not own_cache:
        return _sentinel_master(settings, url, decode_responses)
    if settings.cluster:
        cluster = TimedRedisCluster.from_url(
            url,
            decode_responses=decode_responses,
            socket_timeout=settings.socket_timeout,
            socket_connect_timeout=settings.connect_timeout,
            max_connections=settings.max_connections,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        )
        return cast(Redis, cluster)
    # A blocking pool: past max_connections a command waits for a free connection (up to
    # the socket timeout) instead of failing at once with "Too many connections" -- 200
    # handlers at once, each with a Redis call of its own, outnumber the default 64.
    pool = redis_async.BlockingConnectionPool.from_url(
        url, **_pool_options(settings, decode_responses)
    )
    # No retry at the client: redis-py takes a retry policy from the pool's connections, and
    # these have none, so a command that meets a dropped connection fails at once. That is
    # deliberate: a retried XADD or script whose first try reached Redis would append twice;
    # the callers (the consumer's loops, the publisher's callers, the gateway) retry at a
    # level that knows whether doing it again is safe.
    client: Redis = TimedRedis(connection_pool=pool)  # timed by command family
    # the client owns the pool it was given: aclose() closes both
    client.auto_close_connection_pool = True
    return client


class _BlockingSentinelPool(SentinelConnectionPool, redis_async.BlockingConnectionPool):
    """The master's pool, blocking like the plain one: past ``max_connections`` a command
    waits for a free connection instead of failing with "Too many connections"."""

    async def aclose(self) -> None:
        """Close the master's connections and the Sentinels' clients, which only this pool
        uses (each :func:`connect` makes a Sentinel client of its own)."""
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


class _Sentinels(Sentinel):
    """redis-py's Sentinel client, asking the Sentinels for the master one task at a time.

    ``discover_master`` moves the Sentinel that answered to the front of its list by
    index across an ``await``: run by several tasks at once (connections opened together
    after a failover) the swaps interleave, and a Sentinel is duplicated in the list and
    another dropped from it -- never asked again, and its client never closed.
    """

    def __init__(self, sentinels: list[tuple[str, int]], **kwargs: Any) -> None:
        super().__init__(sentinels, **kwargs)  # type: ignore[no-untyped-call]
        self._discovering = asyncio.Lock()

    async def discover_master(self, service_name: str) -> Any:
        async with self._discovering:
            return await super().discover_master(service_name)


def _sentinel_master(settings: RedisSettings, url: str, decode_responses: bool) -> Redis:
    """A client of the master the Sentinels name; after a failover its next connections go
    to the promoted replica (commands in flight at the failover fail, once)."""
    # REDIS_URL's user, password, database and TLS apply to the master; host and port are
    # the Sentinels' to name
    options = parse_url(url)
    options.pop("host", None)
    options.pop("port", None)
    tls = options.pop("connection_class", None) is SSLConnection
    password = settings.sentinel_password
    sentinel = _Sentinels(
        settings.sentinels,
        sentinel_kwargs={
            "socket_timeout": settings.socket_timeout,
            "socket_connect_timeout": settings.connect_timeout,
            "username": settings.sentinel_username,
            "password": password.get_secret_value() if password else None,
        },
    )
    assert settings.sentinel_master is not None, "RedisSettings requires it with sentinels"
    client: Redis = sentinel.master_for(
        settings.sentinel_master,
        redis_class=TimedRedis,  # its calls timed by command family, as a plain client's
        connection_pool_class=_BlockingSentinelPool,
        **_pool_options(settings, decode_responses),
        ssl=tls,
        **options,
    )
    return client


def _pool_options(settings: RedisSettings, decode_responses: bool) -> dict[str, Any]:
    """The blocking pool's options, the same for a plain client and a Sentinel master's."""
    return {
        "decode_responses": decode_responses,
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "max_connections": settings.max_connections,
        "timeout": settings.socket_timeout,  # s: the longest wait for a free connection
        "health_check_interval": 30,  # s: ping a connection idle this long before reuse
    }


def describe(settings: RedisSettings) -> str:
    """Where the streams' Redis is, fit for logs: the URL without its password, or the
    master's name and its Sentinels."""
    if settings.sentinels:
        sentinels = ",".join(f"{host}:{port}" for host, port in settings.sentinels)
        return f"master {settings.sentinel_master!r} of Sentinels {sentinels}"
    return redacted_url(settings.url.get_secret_value())


@asynccontextmanager
async def redis_connection(settings: RedisSettings) -> AsyncIterator[Redis]:
    """Open at entry (a PING proves the URL works), close at exit."""
    client = connect(settings)
    try:
        await client.ping()
        yield client
    finally:
        await client.aclose()


#: query parameters redis-py reads secrets from
_SECRET_QUERY_PARAMS = frozenset({"password", "ssl_password"})


def redacted_url(url: str) -> str:
    """The URL with any password (userinfo, ?password=, ?ssl_password=) replaced, fit for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, rest = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        rest = f"{user + ':' if user else ''}***@{rest}"
    location, qmark, query = rest.partition("?")
    if qmark:
        query = "&".join(
            f"{name}=***" if (name := part.partition("=")[0]) in _SECRET_QUERY_PARAMS else part
            for part in query.split("&")
        )
    return f"{scheme}{sep}{location}{qmark}{query}"
