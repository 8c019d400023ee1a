"""Leases on a real Redis: one holder at a time, a lapsed lease taken over, a lost one stops."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio

from riverbed.lease import LeaseLost, run_exclusively
from riverbed.testing import wait_for

pytestmark = pytest.mark.integration


async def test_only_one_holder_runs_and_the_lease_is_given_back(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    key = f"test:lease:{unique}"
    release = asyncio.Event()
    ran: list[str] = []

    async def work(name: str) -> None:
        ran.append(name)
        await release.wait()

    # renewed every 300 ms: a margin of 600 ms for a loaded machine
    ttl_ms = 900
    first = asyncio.create_task(
        run_exclusively(redis_client, key, lambda: work("a"), ttl_ms=ttl_ms)
    )
    await wait_for(lambda: ran == ["a"], what="the first holder running")
    assert await run_exclusively(redis_client, key, lambda: work("b"), ttl_ms=ttl_ms) is False
    await asyncio.sleep(1.2)  # longer than the TTL: renewals keep it
    assert await run_exclusively(redis_client, key, lambda: work("c"), ttl_ms=ttl_ms) is False
    release.set()
    assert await first is True
    assert await redis_client.exists(key) == 0, "given back at the end"
    assert await run_exclusively(redis_client, key, lambda: work("d"), ttl_ms=ttl_ms) is True
    assert ran == ["a", "d"]


async def test_a_lease_left_by_a_crashed_holder_lapses_and_is_taken_over(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    key = f"test:lease:{unique}"
    await redis_client.set(key, "crashed-holder", px=200)  # nobody renews it
    ran: list[int] = []

    async def work() -> None:
        ran.append(1)

    assert await run_exclusively(redis_client, key, work, ttl_ms=1_000) is False

    async def lapsed() -> bool:
        return await redis_client.exists(key) == 0

    await wait_for(lapsed, what="the lease lapsing")
    assert await run_exclusively(redis_client, key, work, ttl_ms=1_000) is True
    assert ran == [1]


async def test_work_whose_lease_was_taken_over_is_cancelled(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    key = f"test:lease:{unique}"
    cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    holder = asyncio.create_task(run_exclusively(redis_client, key, work, ttl_ms=300))
    await wait_for(lambda: redis_client.exists(key), what="the lease taken")
    await redis_client.set(key, "someone-else", px=10_000)  # as if it lapsed and was taken
    with pytest.raises(LeaseLost):
        await holder
    assert cancelled.is_set()
    assert await redis_client.get(key) == b"someone-else", "another holder's lease is left alone"


async def test_the_works_own_error_propagates_and_the_lease_is_given_back(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    key = f"test:lease:{unique}"

    async def work() -> None:
        raise ValueError("bad report")

    with pytest.raises(ValueError, match="bad report"):
        await run_exclusively(redis_client, key, work, ttl_ms=1_000)
    assert await redis_client.exists(key) == 0
