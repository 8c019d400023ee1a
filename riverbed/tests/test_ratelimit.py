"""GCRA in Redis: bursts, refill, per-call rates, and agreement between replicas."""

from __future__ import annotations

import pytest
import redis.asyncio

from riverbed.ratelimit import Decision, LeasedRateLimiter, RateLimiter

pytestmark = pytest.mark.integration


async def test_a_key_allows_its_burst_then_refuses_with_a_wait(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    # 0.01/s: one event per 100 s, so no refill can happen while the test runs
    limiter = RateLimiter(redis_client, per_second=0.01, burst=3)
    key = f"test:{unique}:rate"
    decisions = [await limiter.take(key) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    refused = decisions[3]
    assert 0 < refused.retry_after_ms <= 100_000
    assert refused.limit == 3
    assert await redis_client.pttl(key) > 0, "the state expires on its own"


async def test_two_limiters_on_one_key_share_the_budget(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    key = f"test:{unique}:rate"
    one = RateLimiter(redis_client, per_second=0.01, burst=2)
    two = RateLimiter(redis_client, per_second=0.01, burst=2)
    assert (await one.take(key)).allowed
    assert (await two.take(key)).allowed
    assert not (await one.take(key)).allowed


async def test_a_request_costing_more_than_the_burst_is_refused_and_takes_nothing(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    limiter = RateLimiter(redis_client, per_second=0.01, burst=5)
    key = f"test:{unique}:rate"
    assert not (await limiter.take(key, cost=6)).allowed
    assert (await limiter.take(key, cost=5)).allowed


async def test_a_slower_rate_for_one_call_spaces_requests_further_apart(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    limiter = RateLimiter(redis_client, per_second=1_000.0, burst=1)
    key = f"test:{unique}:rate"
    assert (await limiter.take(key, per_second=0.01)).allowed
    refused = await limiter.take(key)
    assert not refused.allowed
    assert refused.retry_after_ms > 1_000  # the slow call's 100 s interval still holds


def test_a_refusal_becomes_retry_after_and_ratelimit_headers() -> None:
    decision = Decision(allowed=False, limit=5, remaining=0, retry_after_ms=1_200, reset_ms=4_001)
    assert decision.headers() == {
        "RateLimit-Limit": "5",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "5",
        "Retry-After": "2",
    }


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_a_limit_that_cannot_work_is_refused_at_construction(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        RateLimiter(lambda: None, per_second=rate, burst=burst)  # type: ignore[arg-type,return-value]


async def test_leases_spend_locally_and_never_exceed_the_shared_limit(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    shared = RateLimiter(redis_client, per_second=0.001, burst=20)
    replicas = [LeasedRateLimiter(shared, lease_size=8) for _ in range(2)]
    key = f"test:{unique}:lease"
    allowed = 0
    for _ in range(30):
        for replica in replicas:
            allowed += (await replica.take(key)).allowed
    assert allowed == 20, "two replicas together get exactly the shared burst"
