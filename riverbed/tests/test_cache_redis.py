"""Cache against a real Redis: TTLs, invalidation, single flight, races with changes, metrics."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio
from prometheus_client import REGISTRY
from pydantic import BaseModel

from riverbed import keys
from riverbed.cache import Cache, CacheNamespace, PydanticCodec

pytestmark = pytest.mark.integration

TTL = timedelta(minutes=5)
TTL_MS = 300_000


class Endpoint(BaseModel):
    id: str
    url: str


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class BlockingLoader:
    """A loader that counts its calls and returns (or raises) only once released."""

    def __init__(self, value: Any = None, error: Exception | None = None) -> None:
        self.value, self.error = value, error
        self.calls = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def wait_started(self) -> None:
        async with asyncio.timeout(5):
            await self.started.wait()

    async def __call__(self) -> Any:
        self.calls += 1
        self.started.set()
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.value


@pytest.fixture
def cache(redis_client: redis.asyncio.Redis) -> Cache:
    return Cache(redis_client)


@pytest.fixture
def ns(cache: Cache, unique: str) -> CacheNamespace[Any]:
    return cache.namespace(f"t-{unique}", ttl=TTL)


async def test_set_then_get_returns_the_value_stored_with_the_namespace_ttl(
    ns: CacheNamespace[Any], redis_client: redis.asyncio.Redis
) -> None:
    await ns.set("e1", {"url": "https://example.test", "tags": ["a"]})
    assert await ns.get("e1") == {"url": "https://example.test", "tags": ["a"]}
    pttl = await redis_client.pttl(keys.cache_entry_key(ns.name, 0, "e1"))
    assert 0 < pttl <= TTL_MS


async def test_set_with_its_own_ttl_uses_it(
    ns: CacheNamespace[Any], redis_client: redis.asyncio.Redis
) -> None:
    await ns.set("e1", 1, ttl=2.5)
    assert 0 < await redis_client.pttl(keys.cache_entry_key(ns.name, 0, "e1")) <= 2_500


async def test_loaded_value_is_stored_with_the_namespace_ttl(
    ns: CacheNamespace[Any], redis_client: redis.asyncio.Redis
) -> None:
    async def load() -> str:
        return "loaded"

    assert await ns.get_or_load("e1", load) == "loaded"
    assert await ns.get("e1") == "loaded"
    pttl = await redis_client.pttl(keys.cache_entry_key(ns.name, 0, "e1"))
    assert 0 < pttl <= TTL_MS
    assert await ns.get_or_load("e2", load, ttl=timedelta(seconds=3)) == "loaded"
    assert 0 < await redis_client.pttl(keys.cache_entry_key(ns.name, 0, "e2")) <= 3_000


async def test_every_key_the_cache_writes_expires_except_the_namespace_version(
    ns: CacheNamespace[Any], redis_client: redis.asyncio.Redis
) -> None:
    async def load() -> int:
        return 1

    async def fail() -> int:
        raise RuntimeError("backend down")

    await ns.set("a", 1)
    await ns.get_or_load("b", load)
    with pytest.raises(RuntimeError):
        await ns.get_or_load("c", fail)  # leaves its fill lease behind
    await ns.invalidate_all()
    await ns.set("a", 2)
    await ns.delete("b")
    written = [key async for key in redis_client.scan_iter(match=f"rb:cache:{{{ns.name}}}:*")]
    assert len(written) >= 4
    for key in written:
        ttl = await redis_client.pttl(key)
        if key.decode() == keys.cache_version_key(ns.name):
            assert ttl == -1
        else:
            assert 0 < ttl <= TTL_MS, key


async def test_get_of_an_absent_key_is_none(ns: CacheNamespace[Any]) -> None:
    assert await ns.get("nothing") is None


async def test_delete_forgets_a_key_and_only_that_key(ns: CacheNamespace[Any]) -> None:
    await ns.set("a", "A")
    await ns.set("b", "B")
    await ns.delete("a")
    await ns.delete("never-set")
    assert await ns.get("a") is None
    assert await ns.get("b") == "B"


async def test_invalidate_all_hides_every_old_entry_which_then_expires_by_ttl(
    ns: CacheNamespace[Any], redis_client: redis.asyncio.Redis
) -> None:
    for key in ("a", "b"):
        await ns.set(key, key)
    await ns.invalidate_all()
    assert await ns.get("a") is None
    assert await ns.get("b") is None
    old_entry = keys.cache_entry_key(ns.name, 0, "a")
    assert 0 < await redis_client.pttl(old_entry) <= TTL_MS
    await ns.set("a", "new")
    assert await ns.get("a") == "new"
    assert await redis_client.get(keys.cache_version_key(ns.name)) == b"1"


async def test_invalidation_by_another_process_is_seen_at_once(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    here = Cache(redis_client).namespace(f"t-{unique}", ttl=TTL)
    there = Cache(redis_client).namespace(f"t-{unique}", ttl=TTL)
    await here.set("a", "old")
    assert await there.get("a") == "old"
    await there.invalidate_all()
    assert await here.get("a") is None
    await there.set("a", "new")
    assert await here.get("a") == "new"
    await here.delete("a")
    assert await there.get("a") is None


async def test_namespaces_do_not_share_keys(cache: Cache, unique: str) -> None:
    first = cache.namespace(f"a-{unique}", ttl=TTL)
    second = cache.namespace(f"b-{unique}", ttl=TTL)
    await first.set("k", 1)
    await second.set("k", 2)
    await first.invalidate_all()
    assert await first.get("k") is None
    assert await second.get("k") == 2


async def test_pydantic_model_values_round_trip_as_json(
    cache: Cache, unique: str, redis_client: redis.asyncio.Redis
) -> None:
    endpoints = cache.namespace(f"t-{unique}", ttl=TTL, model=Endpoint)
    endpoint = Endpoint(id="e1", url="https://example.test/hook")
    await endpoints.set("e1", endpoint)
    assert await endpoints.get("e1") == endpoint
    stored = await redis_client.get(keys.cache_entry_key(endpoints.name, 0, "e1"))
    assert stored == endpoint.model_dump_json().encode()  # readable with redis-cli


async def test_an_absent_result_can_be_cached_too(cache: Cache, unique: str) -> None:
    endpoints = cache.namespace(
        f"t-{unique}", ttl=TTL, codec=PydanticCodec[Endpoint | None](Endpoint | None)
    )
    calls = 0

    async def load() -> Endpoint | None:
        nonlocal calls
        calls += 1
        return None

    assert await endpoints.get_or_load("missing", load) is None
    assert await endpoints.get_or_load("missing", load) is None
    assert calls == 1


async def test_50_concurrent_misses_for_one_key_load_it_once(ns: CacheNamespace[Any]) -> None:
    loader = BlockingLoader(value={"v": 1})
    misses = sample("riverbed_cache_misses_total", namespace=ns.name)
    loads = sample("riverbed_cache_load_seconds_count", namespace=ns.name)
    callers = [asyncio.create_task(ns.get_or_load("k", loader)) for _ in range(50)]
    await loader.wait_started()
    loader.release.set()
    assert await asyncio.gather(*callers) == [{"v": 1}] * 50
    assert loader.calls == 1
    assert sample("riverbed_cache_misses_total", namespace=ns.name) == misses + 50
    assert sample("riverbed_cache_load_seconds_count", namespace=ns.name) == loads + 1
    assert await ns.get_or_load("k", loader) == {"v": 1}
    assert loader.calls == 1


async def test_a_loader_error_reaches_every_waiter_and_is_not_cached(
    ns: CacheNamespace[Any],
) -> None:
    failing = BlockingLoader(error=RuntimeError("database unavailable"))
    callers = [asyncio.create_task(ns.get_or_load("k", failing)) for _ in range(20)]
    await failing.wait_started()
    failing.release.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) and "unavailable" in str(o) for o in outcomes)
    assert failing.calls == 1
    assert await ns.get("k") is None

    working = BlockingLoader(value="v")
    working.release.set()
    assert await ns.get_or_load("k", working) == "v"
    assert working.calls == 1
    assert await ns.get("k") == "v"


async def test_cancelling_the_first_caller_does_not_wedge_the_others(
    ns: CacheNamespace[Any],
) -> None:
    loader = BlockingLoader(value="v")
    first = asyncio.create_task(ns.get_or_load("k", loader))
    second = asyncio.create_task(ns.get_or_load("k", loader))
    await loader.wait_started()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    loader.release.set()
    assert await asyncio.wait_for(second, timeout=5) == "v"
    assert loader.calls == 1
    assert await ns.get("k") == "v"


async def test_a_load_whose_callers_all_left_still_fills_the_cache(
    ns: CacheNamespace[Any],
) -> None:
    loader = BlockingLoader(value="v")
    only = asyncio.create_task(ns.get_or_load("k", loader))
    await loader.wait_started()
    only.cancel()
    with pytest.raises(asyncio.CancelledError):
        await only
    loader.release.set()
    # joins the flight if it is still running, else reads the cache: either way it ends
    # after the fill, without calling the loader again
    assert await asyncio.wait_for(ns.get_or_load("k", loader), timeout=5) == "v"
    assert loader.calls == 1
    assert await ns.get("k") == "v"


@pytest.mark.parametrize("change", ["delete", "invalidate_all", "set"])
async def test_a_change_during_a_load_is_not_overwritten_by_the_loaded_value(
    ns: CacheNamespace[Any], change: str
) -> None:
    await ns.set("other", "kept")
    loader = BlockingLoader(value="stale")
    caller = asyncio.create_task(ns.get_or_load("k", loader))
    await loader.wait_started()
    if change == "delete":
        await ns.delete("k")
    elif change == "invalidate_all":
        await ns.invalidate_all()
    else:
        await ns.set("k", "fresh")
    loader.release.set()
    assert await caller == "stale"  # the caller asked before the change: it may see the old value
    assert await ns.get("k") == ("fresh" if change == "set" else None)


async def test_concurrent_loads_in_two_processes_cache_one_value(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    here = Cache(redis_client).namespace(f"t-{unique}", ttl=TTL)
    there = Cache(redis_client).namespace(f"t-{unique}", ttl=TTL)
    slow, fast = BlockingLoader(value="slow"), BlockingLoader(value="fast")
    slow_caller = asyncio.create_task(here.get_or_load("k", slow))
    await slow.wait_started()
    fast.release.set()
    assert await there.get_or_load("k", fast) == "fast"  # took the lease over
    slow.release.set()
    assert await slow_caller == "slow"
    assert await here.get("k") == "fast"


async def test_hits_misses_and_load_time_are_counted_per_namespace(
    ns: CacheNamespace[Any],
) -> None:
    def counts() -> tuple[float, float, float]:
        return (
            sample("riverbed_cache_hits_total", namespace=ns.name),
            sample("riverbed_cache_misses_total", namespace=ns.name),
            sample("riverbed_cache_load_seconds_count", namespace=ns.name),
        )

    async def load() -> str:
        return "v"

    hits, misses, loads = counts()
    await ns.get("k")  # miss, no load
    await ns.get_or_load("k", load)  # miss, load
    await ns.get_or_load("k", load)  # hit
    await ns.get("k")  # hit
    assert counts() == (hits + 2, misses + 2, loads + 1)
    assert sample("riverbed_cache_load_seconds_sum", namespace=ns.name) > 0


async def test_an_entry_that_no_longer_decodes_is_counted_and_reloaded(
    cache: Cache, unique: str, redis_client: redis.asyncio.Redis
) -> None:
    endpoints = cache.namespace(f"t-{unique}", ttl=TTL, model=Endpoint)
    entry = keys.cache_entry_key(endpoints.name, 0, "e1")
    await redis_client.set(
        entry, b'{"id": "e1", "address": "written by an older model"}', px=TTL_MS
    )
    errors = sample("riverbed_cache_errors_total", namespace=endpoints.name, operation="decode")
    assert await endpoints.get("e1") is None
    endpoint = Endpoint(id="e1", url="https://example.test/hook")

    async def load() -> Endpoint:
        return endpoint

    assert await endpoints.get_or_load("e1", load) == endpoint
    assert await endpoints.get("e1") == endpoint
    assert 0 < await redis_client.pttl(entry) <= TTL_MS
    assert (
        sample("riverbed_cache_errors_total", namespace=endpoints.name, operation="decode")
        == errors + 2
    )


async def test_an_undecodable_entry_deleted_during_its_reload_stays_deleted(
    cache: Cache, unique: str, redis_client: redis.asyncio.Redis
) -> None:
    endpoints = cache.namespace(f"t-{unique}", ttl=TTL, model=Endpoint)
    entry = keys.cache_entry_key(endpoints.name, 0, "e1")
    await redis_client.set(entry, b"not json at all", px=TTL_MS)
    loader = BlockingLoader(value=Endpoint(id="e1", url="https://example.test/old"))
    caller = asyncio.create_task(endpoints.get_or_load("e1", loader))
    await loader.wait_started()
    await endpoints.delete("e1")
    loader.release.set()
    assert (await caller).url == "https://example.test/old"
    assert await redis_client.exists(entry) == 0
