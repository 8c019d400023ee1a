"""The shared state in a real Redis: suppression list, send ledger, per-domain pace."""

from __future__ import annotations

import pytest
import redis.asyncio

from riverbed_email import keys
from riverbed_email.adapters.redis_stores import (
    RedisDomainThrottle,
    RedisSendLedger,
    RedisSuppressionList,
)
from riverbed_email.domain.records import FailedRecord, SentRecord, Suppression

pytestmark = pytest.mark.integration


async def test_a_suppression_is_shared_normalized_and_keeps_its_first_reason(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    replica_a = RedisSuppressionList(redis_client)
    replica_b = RedisSuppressionList(redis_client)
    address = f"Ada-{unique}@Example.com"
    try:
        assert await replica_a.add(Suppression(address, "550 5.1.1 no such user", 550, "ev-1"))
        assert not await replica_b.add(Suppression(address, "later reason"))
        found = await replica_b.get(address.lower())
        assert found is not None
        assert (found.address, found.reason, found.smtp_code, found.event_id) == (
            address.lower(),
            "550 5.1.1 no such user",
            550,
            "ev-1",
        )
        assert found.at_ms > 0
        listed = [s.address async for s in replica_b.entries()]
        assert address.lower() in listed
        assert await replica_b.remove(address)
        assert await replica_a.get(address) is None
        assert not await replica_a.remove(address)
    finally:
        await redis_client.hdel(keys.email_suppression_key(), address.lower())


async def test_a_suppression_written_by_hand_is_still_honoured(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    address = f"hand-{unique}@example.com"
    await redis_client.hset(keys.email_suppression_key(), address, "complained by phone")
    try:
        found = await RedisSuppressionList(redis_client).get(address)
        assert found is not None
        assert found.reason == "complained by phone"
    finally:
        await redis_client.hdel(keys.email_suppression_key(), address)


async def test_the_send_ledger_records_once_with_a_ttl(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    ledger = RedisSendLedger(redis_client, ttl_s=3600)
    event_id = f"ev-{unique}"
    assert await ledger.get(event_id) is None
    record = SentRecord("<m@x>", 2, 1_700_000_000_000)
    assert await ledger.record(event_id, record)
    assert not await ledger.record(event_id, SentRecord("<other@x>", 3, 0))
    assert await ledger.get(event_id) == record
    ttl = await redis_client.ttl(keys.email_sent_key(event_id))
    assert 0 < ttl <= 3600


async def test_the_ledger_records_a_give_up_once_with_a_ttl(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    ledger = RedisSendLedger(redis_client, ttl_s=3600)
    event_id = f"ev-{unique}"
    assert await ledger.failure(event_id) is None
    record = FailedRecord("exhausted", "451 4.7.1 greylisted", False, 451, 20, 1_700_000_000_000)
    assert await ledger.record_failure(event_id, record)
    later = FailedRecord("rejected", "550 later", True, 550, 21, 0)
    assert not await ledger.record_failure(event_id, later), "the first decision stands"
    assert await ledger.failure(event_id) == record
    assert await ledger.get(event_id) is None, "a give-up is no send"
    ttl = await redis_client.ttl(keys.email_failed_key(event_id))
    assert 0 < ttl <= 3600


async def test_the_sending_lease_is_one_holders_until_released_or_run_out(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    replica_a = RedisSendLedger(redis_client, ttl_s=3600)
    replica_b = RedisSendLedger(redis_client, ttl_s=3600)
    event_id = f"ev-{unique}"
    key = keys.email_sending_key(event_id)
    try:
        assert await replica_a.hold(event_id, "a", 60_000) == 0
        assert await replica_a.hold(event_id, "a", 60_000) == 0, "its holder renews it"
        left = await replica_b.hold(event_id, "b", 60_000)
        assert 0 < left <= 60_000, "another holder is told how long it still runs"
        await replica_b.release(event_id, "b")
        assert await redis_client.get(key) == b"a", "only its holder gives it up"
        await replica_a.release(event_id, "a")
        assert await replica_b.hold(event_id, "b", 60_000) == 0
        assert 0 < await redis_client.pttl(key) <= 60_000
    finally:
        await redis_client.delete(key)


async def test_a_domain_gets_its_burst_then_must_wait(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    throttle = RedisDomainThrottle(
        redis_client, per_second=0.01, burst=3, slowdown_window_s=60, max_level=4
    )  # one send per 100 s: nothing refills while the test runs
    domain = f"{unique}.test"
    waits = [await throttle.take(domain) for _ in range(4)]
    assert waits[:3] == [0, 0, 0]
    assert 0 < waits[3] <= 100_000
    # another domain has its own budget
    assert await throttle.take(f"other-{unique}.test") == 0


async def test_a_domain_that_asks_us_to_slow_down_gets_less_and_the_level_expires(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    throttle = RedisDomainThrottle(
        redis_client, per_second=0.04, burst=8, slowdown_window_s=60, max_level=2
    )
    domain = f"{unique}.test"
    assert [await throttle.slow_down(domain) for _ in range(3)] == [1, 2, 2]  # capped
    assert await throttle.level(domain) == 2
    # rate / 4 and burst / 4: two sends at once, then a wait of about 100 s (not 25 s)
    waits = [await throttle.take(domain) for _ in range(3)]
    assert waits[:2] == [0, 0]
    assert waits[2] > 25_000
    ttl_ms = await redis_client.pttl(keys.email_domain_slowdown_key(domain))
    assert 0 < ttl_ms <= 60_000
