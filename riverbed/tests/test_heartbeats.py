"""Heartbeats: a dead consumer's entries are taken over in seconds; a live slow one keeps its."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from riverbed import keys
from riverbed.consumer import (
    Message,
    Subscription,
    default_consumer_name,
    unused_consumer_name,
)
from riverbed.publisher import Publisher
from riverbed.testing import (
    ConsumerFactory,
    Processes,
    fast_settings,
    make_event,
    wait_for,
)

pytestmark = pytest.mark.integration

WORKER = Path(__file__).parent / "workers" / "consume.py"


async def _count(value: Any) -> int:
    return int(await value)


@pytest.mark.fault
async def test_a_killed_consumers_entries_are_taken_over_long_before_the_visibility_timeout(
    processes: Processes, redis_url: str, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream, effects, total = f"t.{unique}", f"test:{unique}:effects", 100
    events = [make_event(i) for i in range(total)]
    await Publisher(redis_client).publish_many(events, stream=stream)
    env = {
        "REDIS_URL": redis_url,
        "WORKER_STREAM": stream,
        "WORKER_EFFECTS": effects,
        "WORKER_DELAY_MS": "100",
        "RIVERBED_CONSUMER_CONCURRENCY": "20",
        "RIVERBED_CONSUMER_BLOCK_MS": "100",
        # the visibility timeout is far beyond this test's waits: only heartbeats can help
        "RIVERBED_CONSUMER_VISIBILITY_TIMEOUT_MS": "600000",
        "RIVERBED_CONSUMER_HEARTBEAT_INTERVAL_MS": "200",
        "RIVERBED_CONSUMER_HEARTBEAT_TIMEOUT_MS": "1000",
    }
    victim = processes.start("victim", WORKER, {**env, "WORKER_NAME": "victim"})
    processes.start("sibling", WORKER, {**env, "WORKER_NAME": "sibling"})
    await wait_for(lambda: _over(redis_client.hlen(f"{effects}:calls"), 10), what="work begun")
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL

    # the waits below end long before the 600 s visibility timeout: only heartbeats can help
    await wait_for(lambda: _is(redis_client.scard(effects), total), timeout=60, what="all done")
    await wait_for(lambda: _is(_pending(redis_client, stream, "workers"), 0), what="acked")
    beats = keys.heartbeats_key(stream, "workers")
    await wait_for(
        lambda: _is(redis_client.hexists(beats, "victim"), 0),
        what="a dead consumer with nothing left forgotten",
    )


async def _over(value: Any, floor: int) -> bool:
    return await _count(value) > floor


async def _is(value: Any, expected: int) -> bool:
    return await _count(value) == expected


async def test_a_live_consumer_with_a_slow_handler_keeps_its_entries(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    calls: list[str] = []
    settings = fast_settings(
        visibility_timeout_ms=60_000, heartbeat_interval_ms=100, heartbeat_timeout_ms=500
    )

    async def slow(message: Message[Any]) -> None:
        calls.append(f"slow:{message.attempt}")
        await wait_for(lambda: _over(redis_client.hlen(beats_key), 1), what="sibling beating")
        # several heartbeat timeouts pass while this handler runs
        await wait_for(lambda: _longer_than(started, 2.0), what="a slow handler")

    async def sibling(message: Message[Any]) -> None:
        calls.append("sibling")

    beats_key = keys.heartbeats_key(stream, "test")
    started = time.monotonic()
    await publisher.publish(make_event(1), stream=stream)
    start_consumer(stream, slow, name="slow", settings=settings)
    await wait_for(lambda: calls == ["slow:1"], what="the slow handler started")
    start_consumer(stream, sibling, name="sibling", settings=settings)
    await wait_for(lambda: _is(_pending(redis_client, stream), 0), timeout=30, what="acknowledged")
    assert calls == ["slow:1"], "the sibling never took the entry of a live consumer"


def _longer_than(since: float, seconds: float) -> bool:
    return time.monotonic() - since > seconds


async def _pending(client: redis.asyncio.Redis, stream: str, group: str = "test") -> int:
    return int((await client.xpending(keys.stream_key(stream), group))["pending"])


async def test_a_clean_stop_removes_the_heartbeat(
    start_consumer: ConsumerFactory, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"t.{unique}"

    async def handler(message: Message[Any]) -> None:
        return None

    consumer = start_consumer(stream, handler, name="leaving")
    beats_key = keys.heartbeats_key(stream, "test")
    await wait_for(lambda: redis_client.hexists(beats_key, "leaving"), what="first beat")
    consumer.stop()
    await consumer.join()
    assert not await redis_client.hexists(beats_key, "leaving")


def test_the_default_consumer_name_is_the_platforms_stable_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOSTNAME", "email-7f9c-0")
    assert default_consumer_name() == "email-7f9c-0"
    monkeypatch.delenv("HOSTNAME")
    assert default_consumer_name().endswith(f"-{__import__('os').getpid()}")


async def test_a_name_a_live_process_uses_is_not_taken_twice(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"t.{unique}"

    async def handler(message: Message[Any]) -> None:
        return None

    subscription = Subscription(stream=stream, group="test", handler=handler)
    settings = fast_settings(heartbeat_timeout_ms=5_000)
    assert await unused_consumer_name(redis_client, [subscription], "pod-a", settings) == "pod-a"
    seconds, micros = await redis_client.time()
    await redis_client.hset(
        keys.heartbeats_key(stream, "test"), "pod-a", seconds * 1000 + micros // 1000
    )
    renamed = await unused_consumer_name(redis_client, [subscription], "pod-a", settings)
    assert renamed.startswith("pod-a-")
    assert renamed != "pod-a"


async def test_a_sibling_back_from_an_outage_waits_before_judging_a_silent_consumer(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    """After an outage every consumer's last beat is old: the first one back must give the
    others a heartbeat timeout to beat again before it takes anything of theirs."""
    import asyncio

    from riverbed.consumer import StreamConsumer

    stream, release = f"t.{unique}", asyncio.Event()
    beats = keys.heartbeats_key(stream, "test")
    calls: list[str] = []

    async def holder(message: Message[Any]) -> None:
        calls.append("holder")
        await release.wait()

    async def sibling(message: Message[Any]) -> None:
        calls.append("sibling")

    def consumer(name: str, handler: Any, beat_ms: int) -> StreamConsumer:
        settings = fast_settings(
            visibility_timeout_ms=60_000, heartbeat_interval_ms=beat_ms, heartbeat_timeout_ms=1_000
        )
        subscription = Subscription(stream=stream, group="test", handler=handler)
        return StreamConsumer(
            redis_client, subscription, settings=settings, consumer_name=name, service="test"
        )

    live, back = consumer("holder", holder, 500), consumer("sibling", sibling, 50)
    try:
        await Publisher(redis_client).publish(make_event(1), stream=stream)
        live.start()
        await wait_for(lambda: calls == ["holder"], what="the holder has the entry")
        # right after one of the holder's beats, make it look as an outage leaves it: its
        # last beat long ago; it beats again within 500 ms, and the sibling starts now
        first = await redis_client.hget(beats, "holder")
        await wait_for(lambda: _changed(redis_client.hget(beats, "holder"), first), what="beat")
        await redis_client.hset(beats, "holder", 0)
        back.start()
        await wait_for(lambda: back._in_touch_for(2.0), what="the sibling in touch for 2 s")
        release.set()
        await wait_for(lambda: _is(_pending(redis_client, stream), 0), what="acknowledged")
        assert calls == ["holder"], "the sibling never took the live holder's entry"
    finally:
        release.set()
        for c in (live, back):
            c.stop()
        await asyncio.gather(live.join(), back.join())


async def _changed(value: Any, before: Any) -> bool:
    return bool(await value != before)
