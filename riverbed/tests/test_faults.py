"""Fault injection with real processes: kill -9 mid-batch, SIGTERM drain, Redis flushed."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from riverbed import keys
from riverbed.consumer import Message, StreamConsumer, Subscription
from riverbed.publisher import Publisher
from riverbed.testing import Processes, RedisServer, fast_settings, make_event, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault]

WORKER = Path(__file__).parent / "workers" / "consume.py"


FAST_TIMERS = {
    "RIVERBED_CONSUMER_BLOCK_MS": "100",
    "RIVERBED_CONSUMER_RECLAIM_INTERVAL_MS": "100",
    "RIVERBED_CONSUMER_ACK_FLUSH_MS": "1",
}


class Workers:
    """Consumer processes on the test's Redis, named for their logs."""

    def __init__(self, processes: Processes, redis_url: str) -> None:
        self.processes = processes
        self.redis_url = redis_url

    def start(self, name: str, **env: str) -> subprocess.Popen[bytes]:
        worker_env = {"REDIS_URL": self.redis_url, "WORKER_NAME": name, **FAST_TIMERS, **env}
        return self.processes.start(name, WORKER, worker_env)

    def log(self, name: str) -> str:
        return self.processes.log(name)


@pytest.fixture
def workers(processes: Processes, redis_url: str) -> Workers:
    return Workers(processes, redis_url)


async def test_sigkill_mid_batch_sibling_reclaims_and_every_event_is_handled_once_in_effect(
    workers: Workers, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream, effects, total = f"t.{unique}", f"test:{unique}:effects", 300
    events = [make_event(i) for i in range(total)]
    await Publisher(redis_client).publish_many(events, stream=stream)
    env = {
        "WORKER_STREAM": stream,
        "WORKER_EFFECTS": effects,
        "WORKER_DELAY_MS": "20",
        "RIVERBED_CONSUMER_CONCURRENCY": "20",
        "RIVERBED_CONSUMER_VISIBILITY_TIMEOUT_MS": "1000",
    }
    victim = workers.start("victim", **env)
    await wait_for(lambda: _gt(redis_client.scard(effects), 20), what="victim mid-way")
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    handled_by_victim = await redis_client.scard(effects)
    assert handled_by_victim < total, "the victim must die with work left"
    in_hand = int((await redis_client.xpending(keys.stream_key(stream), "workers"))["pending"])
    assert in_hand > 0, "the kill left entries pending"

    workers.start("sibling", **env)
    await wait_for(
        lambda: _eq(redis_client.scard(effects), total), timeout=60, what="all events handled"
    )
    await wait_for(
        lambda: _pending_is(redis_client, stream, 0), timeout=30, what="everything acknowledged"
    )
    calls = await redis_client.hgetall(f"{effects}:calls")
    assert set(calls) == {e.id.encode() for e in events}
    assert await redis_client.xlen(keys.dead_letter_key(stream)) == 0
    # at most the batch the victim held when killed ran twice; the effect is once each
    reruns = sum(int(v) - 1 for v in calls.values())
    assert reruns <= in_hand


async def test_sigterm_drains_in_flight_work_and_exits_0_without_loss(
    workers: Workers, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream, effects, total = f"t.{unique}", f"test:{unique}:effects", 100
    await Publisher(redis_client).publish_many([make_event(i) for i in range(total)], stream=stream)
    env = {
        "WORKER_STREAM": stream,
        "WORKER_EFFECTS": effects,
        "WORKER_DELAY_MS": "200",
        "RIVERBED_CONSUMER_CONCURRENCY": "10",
    }
    worker = workers.start("draining", **env)
    await wait_for(lambda: _gt(redis_client.hlen(f"{effects}:calls"), 0), what="handlers running")
    worker.send_signal(signal.SIGTERM)
    try:
        exit_code = await asyncio.to_thread(worker.wait, 30)
    except subprocess.TimeoutExpired:
        worker.send_signal(signal.SIGUSR1)
        await asyncio.sleep(1)  # let it write its task dump
        pytest.fail("no exit 30 s after SIGTERM; its log:\n" + workers.log("draining"))
    assert exit_code == 0, workers.log("draining")
    started = await redis_client.hkeys(f"{effects}:calls")
    finished = await redis_client.smembers(effects)
    assert set(started) == finished, "every handler that started also finished"
    assert await _pending_is(redis_client, stream, 0), "every finished handler was acknowledged"
    assert "service stopped" in workers.log("draining")

    # what was never read is still there for the next consumer: nothing lost
    workers.start("successor", **env)
    await wait_for(lambda: _eq(redis_client.scard(effects), total), timeout=60, what="rest handled")


async def test_flushall_recreates_the_group_and_consumption_resumes(
    own_redis: RedisServer, unique: str
) -> None:
    client = redis.asyncio.Redis.from_url(own_redis.url)
    stream = f"t.{unique}"
    seen: list[str] = []

    async def handler(message: Message[Any]) -> None:
        seen.append(message.event.id)

    consumer = StreamConsumer(
        client,
        Subscription(stream=stream, group="test", handler=handler),
        settings=fast_settings(),
        consumer_name="c1",
        service="test-service",
    )
    consumer.start()
    try:
        publisher = Publisher(client)
        await publisher.publish(make_event(1), stream=stream)
        await wait_for(lambda: len(seen) == 1, what="first event")
        await client.flushall()
        after = make_event(2)
        await publisher.publish(after, stream=stream)
        await wait_for(lambda: after.id in seen, what="consumption after FLUSHALL")
        groups = await client.xinfo_groups(keys.stream_key(stream))
        assert [g["name"] for g in groups] == [b"test"]
        assert consumer.healthy
    finally:
        consumer.stop()
        await consumer.join()
        await client.aclose()


async def test_redis_restart_does_not_stop_the_consumer(
    own_redis: RedisServer, unique: str
) -> None:
    client = redis.asyncio.Redis.from_url(own_redis.url)
    stream = f"t.{unique}"
    seen: list[str] = []

    async def handler(message: Message[Any]) -> None:
        seen.append(message.event.id)

    consumer = StreamConsumer(
        client,
        Subscription(stream=stream, group="test", handler=handler),
        settings=fast_settings(),
        consumer_name="c1",
        service="test-service",
    )
    consumer.start()
    try:
        publisher = Publisher(client)
        await publisher.publish(make_event(1), stream=stream)
        await wait_for(lambda: len(seen) == 1, what="first event")
        await asyncio.to_thread(own_redis.restart)  # no persistence: comes back empty
        after = make_event(2)

        async def published() -> bool:
            try:
                await publisher.publish(after, stream=stream)
            except (redis.ConnectionError, OSError):
                return False
            return True

        await wait_for(published, what="Redis back")
        await wait_for(lambda: after.id in seen, timeout=30, what="consumption after restart")
    finally:
        consumer.stop()
        await consumer.join()
        await client.aclose()


async def _gt(value: Any, n: int) -> bool:
    return int(await value) > n


async def _eq(value: Any, n: int) -> bool:
    return int(await value) == n


async def _pending_is(client: redis.asyncio.Redis, stream: str, n: int) -> bool:
    summary = await client.xpending(keys.stream_key(stream), "workers")
    return int(summary["pending"]) == n
