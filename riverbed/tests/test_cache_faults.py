"""Cache on a private Redis: eviction under maxmemory, and Redis going away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from unittest.mock import ANY

import pytest
import redis.asyncio
from prometheus_client import REGISTRY
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from riverbed import keys
from riverbed.cache import Cache
from riverbed.testing import RedisServer, free_port

pytestmark = pytest.mark.integration


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def errors(namespace: str, operation: str) -> float:
    return sample("riverbed_cache_errors_total", namespace=namespace, operation=operation)


@pytest.fixture
async def own_client(own_redis: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    # no retries: a test of Redis being down should not wait out a backoff schedule
    client = redis.asyncio.Redis.from_url(
        own_redis.url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
    )
    try:
        yield client
    finally:
        await client.aclose()


async def test_volatile_lru_evicts_cache_entries_and_never_stream_entries(
    own_redis: RedisServer, own_client: redis.asyncio.Redis, unique: str
) -> None:
    used: int = (await own_client.info("memory"))["used_memory"]
    await own_client.config_set("maxmemory", used + 4 * 1024 * 1024)  # bytes
    await own_client.config_set("maxmemory-policy", "volatile-lru")
    namespace = Cache(own_client).namespace(f"t-{unique}", ttl=timedelta(hours=1))
    stream = keys.stream_key(f"test.{unique}")
    value = "x" * 1024  # bytes per entry: 4 MiB hold about 4 000 of them
    cached = appended = 0
    evicted_at = None
    # Interleave stream appends with cache writes until Redis has evicted for a while.
    while evicted_at is None or cached < evicted_at + 2_000:
        assert cached < 40_000, "Redis never evicted: is maxmemory applied?"
        await asyncio.gather(*(namespace.set(f"k{cached + i}", value) for i in range(50)))
        cached += 50
        await own_client.xadd(stream, {"n": str(appended), "pad": "y" * 100})
        appended += 1
        if evicted_at is None and (await own_client.info("stats"))["evicted_keys"] > 0:
            evicted_at = cached

    assert (await own_client.info("stats"))["evicted_keys"] > 0
    remaining = [k async for k in own_client.scan_iter(match=f"rb:cache:{{{namespace.name}}}:0:*")]
    assert 0 < len(remaining) < cached
    assert await own_client.xlen(stream) == appended
    assert await own_client.pttl(stream) == -1
    oldest = await own_client.xrange(stream, count=1)
    assert oldest == [(ANY, {b"n": b"0", b"pad": b"y" * 100})]  # survived the eviction too


async def test_reads_fall_back_to_the_loader_when_redis_goes_away(
    own_redis: RedisServer, own_client: redis.asyncio.Redis, unique: str
) -> None:
    namespace = Cache(own_client).namespace(f"t-{unique}", ttl=60)
    await namespace.set("k", "cached")
    assert await namespace.get("k") == "cached"
    lookups, fills = errors(namespace.name, "lookup"), errors(namespace.name, "fill")
    own_redis.stop()

    async def load() -> str:
        return "loaded"

    assert await namespace.get_or_load("k", load) == "loaded"
    assert await namespace.get("k") is None
    assert errors(namespace.name, "lookup") == lookups + 2
    assert errors(namespace.name, "fill") == fills  # no lease taken, so no write tried


async def test_explicit_writes_raise_when_redis_is_unreachable(unique: str) -> None:
    client = redis.asyncio.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
    )
    try:
        namespace = Cache(client).namespace(f"t-{unique}", ttl=60)

        async def load() -> int:
            return 7

        assert await namespace.get_or_load("k", load) == 7
        writes: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("set", lambda: namespace.set("k", 1)),
            ("delete", lambda: namespace.delete("k")),
            ("invalidate", namespace.invalidate_all),
        ]
        for operation, write in writes:
            before = errors(namespace.name, operation)
            with pytest.raises(RedisError):
                await write()
            assert errors(namespace.name, operation) == before + 1
    finally:
        await client.aclose()


async def test_a_failed_fill_still_returns_the_loaded_value(
    own_redis: RedisServer, own_client: redis.asyncio.Redis, unique: str
) -> None:
    namespace = Cache(own_client).namespace(f"t-{unique}", ttl=60)
    loading = asyncio.Event()
    release = asyncio.Event()

    async def load() -> str:
        loading.set()
        await release.wait()
        return "loaded"

    fills = errors(namespace.name, "fill")
    caller = asyncio.create_task(namespace.get_or_load("k", load))
    async with asyncio.timeout(5):
        await loading.wait()
    own_redis.stop()  # after the lookup took its lease, before the fill
    release.set()
    assert await caller == "loaded"
    assert errors(namespace.name, "fill") == fills + 1
