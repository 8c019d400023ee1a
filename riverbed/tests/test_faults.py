"""Fault injection with real processes: kill -9 mid-batch, SIGTERM drain, Redis flushed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from riverbed import keys
from riverbed.consumer import Message, StreamConsumer, Subscription
from riverbed.publisher import Publisher
from riverbed.testing import RedisServer, fast_settings, make_event, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault]

WORKER = Path(__file__).parent / "workers" / "consume.py"


class Workers:
    """Consumer processes started by a test; all are killed at teardown."""

    def __init__(self, redis_url: str, tmp_path: Path) -> None:
        self.redis_url = redis_url
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, **env: str) -> subprocess.Popen[bytes]:
        environment = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "WORKER_NAME": name,
            "RIVERBED_CONSUMER_BLOCK_MS": "100",
            "RIVERBED_CONSUMER_RECLAIM_INTERVAL_MS": "100",
            "RIVERBED_CONSUMER_ACK_FLUSH_MS": "1",
            **env,
        }
        with open(self.tmp_path / f"{name}.log", "ab") as log:  # the child keeps its own copy
            process = subprocess.Popen(
                [sys.executable, str(WORKER)], env=environment, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def workers(redis_url: str, tmp_path: Path) -> Iterator[Workers]:
    running = Workers(redis_url, tmp_path)
    yield running
    running.kill_all()


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
