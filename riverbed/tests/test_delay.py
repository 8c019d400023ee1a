"""Time in the runtime: retries parked off the stream, delayed events, promotion, timeouts."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from prometheus_client import REGISTRY

from riverbed import keys
from riverbed.connection import connect
from riverbed.consumer import Message
from riverbed.delay import DelayStore
from riverbed.errors import RetryLater
from riverbed.monitor import StreamMonitor
from riverbed.publisher import Publisher
from riverbed.settings import RedisSettings
from riverbed.testing import (
    TEST_TYPE,
    ConsumerFactory,
    Processes,
    fast_settings,
    make_event,
    wait_for,
)

pytestmark = pytest.mark.integration

WORKERS = Path(__file__).parent / "workers"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def pending(client: redis.asyncio.Redis, stream: str, group: str = "test") -> int:
    try:
        return int((await client.xpending(keys.stream_key(stream), group))["pending"])
    except redis.ResponseError:
        return -1  # no group yet


async def stream_event_ids(client: redis.asyncio.Redis, stream: str) -> list[str]:
    """The event id of every entry on the stream, in order (duplicates kept)."""
    import json

    entries = await client.xrange(keys.stream_key(stream))
    return [json.loads(fields[b"event"])["id"] for _, fields in entries]


async def schedule_due(client: redis.asyncio.Redis, stream: str, count: int) -> set[str]:
    """Put ``count`` events in the delay store, due already; returns their ids."""
    store = DelayStore(client, stream)
    events = [make_event(i) for i in range(count)]
    due_ms = int(time.time() * 1000) - 1_000
    for start in range(0, count, 1_000):
        assert all(await store.schedule(events[start : start + 1_000], due_ms))
    return {e.id for e in events}


# -- retries leave the pending list ----------------------------------------------------


async def test_a_retry_waiting_an_hour_no_longer_pins_retention(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    first = make_event(0)
    handled: set[str] = set()

    async def handler(message: Message[Any]) -> None:
        if message.event.id == first.id:
            raise RetryLater("peer asked for an hour", delay_ms=3_600_000)
        handled.add(message.event.id)

    await publisher.publish(first, stream=stream)
    await publisher.publish_many([make_event(i) for i in range(1, 2_001)], stream=stream)
    start_consumer(stream, handler)
    await wait_for(lambda: len(handled) == 2_000, what="2,000 newer entries handled")
    await wait_for(lambda: _equals(pending(redis_client, stream), 0), what="nothing pending")

    removed = await StreamMonitor(redis_client, [stream]).trim_acknowledged(stream)
    left = await redis_client.xlen(keys.stream_key(stream))
    # approximate trimming keeps at most one partly acknowledged macro node (100 entries)
    assert removed >= 1_900, removed
    assert left <= 101, left
    waiting, due, _ = await DelayStore(redis_client, stream).waiting()
    assert (waiting, due) == (1, 0), "the retry waits in the delay store, not on the stream"


async def _equals(value: Any, expected: int) -> bool:
    return bool((await value) == expected)


async def test_a_retry_comes_back_as_a_new_entry_carrying_attempt_and_first_seen(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    seen: list[tuple[int, str, int]] = []

    async def handler(message: Message[Any]) -> None:
        seen.append((message.attempt, message.entry_id, message.first_seen_ms))
        if message.attempt < 3:
            raise RuntimeError("transient")

    [original] = await publisher.publish_many([make_event(1)], stream=stream)
    start_consumer(stream, handler, settings=fast_settings(max_deliveries=5))
    await wait_for(lambda: len(seen) == 3, what="two retries")
    await wait_for(lambda: _equals(pending(redis_client, stream), 0), what="acknowledged")

    assert [attempt for attempt, _, _ in seen] == [1, 2, 3]
    assert len({entry_id for _, entry_id, _ in seen}) == 3, "each retry is a new entry"
    assert seen[0][1] == original
    assert {first_seen for _, _, first_seen in seen} == {int(original.split("-")[0])}
    [*_, (_, last_fields)] = await redis_client.xrange(keys.stream_key(stream))
    assert last_fields[b"group"] == b"test"
    assert last_fields[b"attempt"] == b"3"
    assert metric("riverbed_retried_total", stream=stream, group="test", type=TEST_TYPE) == 2


async def test_another_groups_retry_is_acknowledged_without_being_handled(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    calls: dict[str, list[int]] = {"flaky": [], "steady": []}

    async def flaky(message: Message[Any]) -> None:
        calls["flaky"].append(message.attempt)
        if message.attempt == 1:
            raise RuntimeError("transient")

    async def steady(message: Message[Any]) -> None:
        calls["steady"].append(message.attempt)

    await publisher.publish(make_event(1), stream=stream)
    start_consumer(stream, flaky, group="flaky")
    # not idempotent: only the entry's group field keeps it from handling flaky's retry
    start_consumer(stream, steady, group="steady", name="c2", idempotent=False)
    await wait_for(lambda: calls["flaky"] == [1, 2], what="flaky's retry handled")
    await wait_for(
        lambda: _equals(redis_client.xlen(keys.stream_key(stream)), 2), what="retry appended"
    )
    await wait_for(lambda: _equals(pending(redis_client, stream, "steady"), 0), what="steady acks")
    groups = {g["name"]: g for g in await redis_client.xinfo_groups(keys.stream_key(stream))}
    assert groups[b"steady"]["entries-read"] == 2, "steady read the retry entry too"
    assert calls["steady"] == [1], "and acknowledged it without handling it"


async def test_dead_lettering_counts_the_carried_attempts(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    attempts: list[int] = []

    async def handler(message: Message[Any]) -> None:
        attempts.append(message.attempt)
        raise RuntimeError("always")

    await publisher.publish(make_event(1), stream=stream)
    start_consumer(stream, handler)  # max_deliveries=3
    await wait_for(lambda: redis_client.xlen(keys.dead_letter_key(stream)), what="dead letter")
    [(_, dead)] = await redis_client.xrange(keys.dead_letter_key(stream))
    assert attempts == [1, 2, 3]
    assert (dead[b"reason"], dead[b"attempts"]) == (b"exhausted", b"3")
    assert await DelayStore(redis_client, stream).waiting() == (0, 0, None)


# -- crashes ---------------------------------------------------------------------------------


FAST_TIMERS = {
    "RIVERBED_CONSUMER_BLOCK_MS": "100",
    "RIVERBED_CONSUMER_RECLAIM_INTERVAL_MS": "100",
    "RIVERBED_CONSUMER_VISIBILITY_TIMEOUT_MS": "1000",
    "RIVERBED_CONSUMER_RETRY_BASE_MS": "50",
    "RIVERBED_CONSUMER_RETRY_JITTER": "0",
}


@pytest.mark.fault
async def test_kill_9_between_a_failed_handler_and_its_parking_loses_and_doubles_nothing(
    processes: Processes, redis_url: str, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream, effects, total = f"t.{unique}", f"test:{unique}:effects", 50
    events = [make_event(i) for i in range(total)]
    await Publisher(redis_client).publish_many(events, stream=stream)
    env = {
        "REDIS_URL": redis_url,
        "WORKER_STREAM": stream,
        "WORKER_EFFECTS": effects,
        "WORKER_FAIL_FIRST": "1",
        **FAST_TIMERS,
    }
    # the victim's outcomes wait a minute before they are applied: it dies holding them
    victim = processes.start(
        "victim",
        WORKERS / "consume.py",
        {**env, "WORKER_NAME": "victim", "RIVERBED_CONSUMER_ACK_FLUSH_MS": "60000"},
    )
    await wait_for(
        lambda: _equals(redis_client.hlen(f"{effects}:calls"), total), what="every first try"
    )
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert await pending(redis_client, stream, "workers") == total, "nothing was parked"
    assert (await DelayStore(redis_client, stream).waiting())[0] == 0

    processes.start("sibling", WORKERS / "consume.py", {**env, "WORKER_NAME": "sibling"})
    await wait_for(lambda: _equals(redis_client.scard(effects), total), timeout=60, what="all")
    await wait_for(lambda: _equals(pending(redis_client, stream, "workers"), 0), what="acked")
    calls = await redis_client.hgetall(f"{effects}:calls")
    # the victim's failed try, then the sibling's successful second attempt: no third run
    assert {int(v) for v in calls.values()} == {2}
    assert await DelayStore(redis_client, stream).waiting() == (0, 0, None)
    assert await redis_client.xlen(keys.dead_letter_key(stream)) == 0


@pytest.mark.fault
async def test_kill_9_of_a_promoter_mid_batch_promotes_every_item_exactly_once(
    processes: Processes, redis_url: str, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream, total = f"t.{unique}", 20_000
    expected = await schedule_due(redis_client, stream, total)
    promoter = processes.start(
        "promoter",
        WORKERS / "promote.py",
        {"REDIS_URL": redis_url, "WORKER_STREAM": stream, "WORKER_BATCH": "200"},
    )
    key = keys.stream_key(stream)
    await wait_for(lambda: _at_least(redis_client.xlen(key), 2_000), what="promotion under way")
    promoter.send_signal(signal.SIGKILL)
    assert promoter.wait(timeout=10) == -signal.SIGKILL
    assert await redis_client.xlen(key) < total, "the promoter must die with work left"

    store = DelayStore(redis_client, stream)
    while (await store.promote_due(batch=1_000)).promoted:
        pass
    ids = await stream_event_ids(redis_client, stream)
    assert len(ids) == total
    assert set(ids) == expected
    assert await store.waiting() == (0, 0, None)


async def _at_least(value: Any, floor: int) -> bool:
    return bool((await value) >= floor)


async def test_two_promoters_side_by_side_never_promote_an_item_twice(
    redis_url: str, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream, total = f"t.{unique}", 5_000
    expected = await schedule_due(redis_client, stream, total)
    others = connect(RedisSettings(url=redis_url))  # a cluster client on the cluster tier

    async def promote_all(client: redis.asyncio.Redis) -> int:
        store, moved = DelayStore(client, stream), 0
        while promoted := (await store.promote_due(batch=100)).promoted:
            moved += promoted
        return moved

    try:
        counts = await asyncio.gather(promote_all(redis_client), promote_all(others))
    finally:
        await others.aclose()
    ids = await stream_event_ids(redis_client, stream)
    assert sum(counts) == total == len(ids)
    assert set(ids) == expected


# -- delayed events ----------------------------------------------------------------------


async def test_an_event_published_for_later_is_handled_at_its_time_not_before(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    handled_at: list[float] = []

    async def handler(message: Message[Any]) -> None:
        handled_at.append(time.time())

    start_consumer(stream, handler)
    deliver_at = datetime.now(UTC) + timedelta(seconds=1)
    entry_id = await publisher.publish(make_event(1), stream=stream, deliver_at=deliver_at)
    assert entry_id == "", "kept for later: no entry yet"
    assert await redis_client.xlen(keys.stream_key(stream)) == 0
    await wait_for(lambda: handled_at, what="the delayed event handled")
    assert handled_at[0] >= deliver_at.timestamp()


async def test_a_time_in_the_past_means_now(
    publisher: Publisher, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"t.{unique}"
    past = datetime.now(UTC) - timedelta(minutes=5)
    entry_id = await publisher.publish(make_event(1), stream=stream, deliver_at=past)
    assert entry_id
    assert await redis_client.xlen(keys.stream_key(stream)) == 1
    assert await DelayStore(redis_client, stream).waiting() == (0, 0, None)


async def test_publishing_the_same_event_for_later_twice_keeps_it_once(
    publisher: Publisher, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream, event = f"t.{unique}", make_event(1)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert await publisher.publish_later([event], later, stream=stream) == [True]
    assert await publisher.publish_later([event], later, stream=stream) == [False]
    assert (await DelayStore(redis_client, stream).waiting())[0] == 1
    with pytest.raises(ValueError, match="timezone-aware"):
        await publisher.publish(event, stream=stream, deliver_at=datetime.now())


async def test_only_its_owner_sees_and_cancels_a_delayed_event(
    publisher: Publisher, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream, event = f"t.{unique}", make_event(1)
    later = datetime.now(UTC) + timedelta(hours=1)
    await publisher.publish_later([event], later, stream=stream, owner="alice")
    store = DelayStore(redis_client, stream)
    assert await store.get(event.id, owner="mallory") is None
    assert await store.cancel(event.id, owner="mallory") == "missing"
    found = await store.get(event.id, owner="alice")
    assert found is not None
    assert found.state == "scheduled"
    assert found.deliver_at is not None
    assert abs(found.deliver_at - later) < timedelta(seconds=1)
    assert found.event is not None
    assert found.event["id"] == event.id
    assert await store.cancel(event.id, owner="alice") == "cancelled"
    assert await store.get(event.id, owner="alice") is None
    assert await store.waiting() == (0, 0, None)


async def test_cancel_racing_promotion_either_cancels_or_delivers_once(
    redis_url: str, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream, total = f"t.{unique}", 500
    expected = await schedule_due(redis_client, stream, total)
    promoter_client = connect(RedisSettings(url=redis_url))
    store = DelayStore(redis_client, stream)

    async def promote_all() -> None:
        promoting = DelayStore(promoter_client, stream)
        # small batches, each its own round trip: the cancels interleave with them
        while (await promoting.promote_due(batch=10)).promoted:
            pass

    async def cancel_all() -> dict[str, str]:
        return {event_id: await store.cancel(event_id) for event_id in sorted(expected)}

    try:
        _, answers = await asyncio.gather(promote_all(), cancel_all())
    finally:
        await promoter_client.aclose()
    delivered = await stream_event_ids(redis_client, stream)
    cancelled = {i for i, answer in answers.items() if answer == "cancelled"}
    too_late = {i for i, answer in answers.items() if answer == "promoted"}
    assert cancelled, "the race must have gone both ways at least once"
    assert too_late, "the race must have gone both ways at least once"
    assert len(delivered) == len(set(delivered)), "nothing delivered twice"
    assert set(delivered) == too_late
    assert cancelled | too_late == expected
    assert not cancelled & set(delivered)


# -- carrying over retries of the old scheme ---------------------------------------------


async def test_retries_scheduled_the_old_way_are_carried_over(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    key = keys.stream_key(stream)
    soon, later = make_event(1), make_event(2)
    entry_ids = await publisher.publish_many([soon, later], stream=stream)
    await redis_client.xgroup_create(key, "test", id="0")
    await redis_client.xreadgroup("test", "old-version", {key: ">"}, count=2)
    now_ms = int(time.time() * 1000)
    legacy = keys.legacy_retry_schedule_key(stream, "test")
    await redis_client.zadd(legacy, {entry_ids[0]: now_ms + 200, entry_ids[1]: now_ms + 3_600_000})
    attempts: dict[str, list[int]] = {}

    async def handler(message: Message[Any]) -> None:
        attempts.setdefault(message.event.id, []).append(message.attempt)

    start_consumer(stream, handler)
    await wait_for(lambda: soon.id in attempts, what="the due retry handled")
    await wait_for(lambda: _equals(pending(redis_client, stream), 0), what="nothing pending")
    assert attempts == {soon.id: [2]}, "its next delivery was its second; the other waits"
    assert await redis_client.exists(legacy) == 0
    waiting, due, _ = await DelayStore(redis_client, stream).waiting()
    assert (waiting, due) == (1, 0)


# -- handler timeouts ---------------------------------------------------------------------


async def test_a_handler_past_its_timeout_is_cancelled_and_counts_as_a_failed_delivery(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    attempts: list[int] = []
    cancelled: list[int] = []

    async def handler(message: Message[Any]) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            try:
                await asyncio.Event().wait()  # hangs, as a stuck peer would make it
            except asyncio.CancelledError:
                cancelled.append(message.attempt)
                raise

    await publisher.publish(make_event(1), stream=stream)
    start_consumer(stream, handler, handler_timeout_s=0.2)
    await wait_for(lambda: attempts == [1, 2], what="a second attempt after the timeout")
    await wait_for(lambda: _equals(pending(redis_client, stream), 0), what="acknowledged")
    assert cancelled == [1]
    labels = {"stream": stream, "group": "test", "type": TEST_TYPE}
    assert metric("riverbed_handler_timeouts_total", **labels) == 1
    assert metric("riverbed_failed_total", **labels) == 1


async def test_handlers_past_half_their_timeout_show_on_a_gauge(
    start_consumer: ConsumerFactory, publisher: Publisher, unique: str
) -> None:
    stream = f"t.{unique}"
    release = asyncio.Event()

    async def handler(message: Message[Any]) -> None:
        await release.wait()

    await publisher.publish(make_event(1), stream=stream)
    start_consumer(stream, handler, handler_timeout_s=1.0)
    labels = {"stream": stream, "group": "test"}
    await wait_for(lambda: metric("riverbed_in_flight", **labels) == 1, what="handler running")
    assert metric("riverbed_handlers_slow", **labels) == 0
    await wait_for(lambda: metric("riverbed_handlers_slow", **labels) == 1, what="slow")
    release.set()
    await wait_for(lambda: metric("riverbed_handlers_slow", **labels) == 0, what="done")
