"""A whole Service over real HTTP and Redis: /metrics parsed, /readyz, retention, lag."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from prometheus_client.parser import text_string_to_metric_families

from riverbed import keys
from riverbed.consumer import Message
from riverbed.errors import PermanentError
from riverbed.lifespan import Resources
from riverbed.monitor import StreamMonitor
from riverbed.publisher import Publisher
from riverbed.service import Service
from riverbed.settings import RedisSettings, ServiceSettings
from riverbed.testing import (
    TEST_TYPE,
    Processes,
    fast_settings,
    free_port,
    make_event,
    wait_for,
)

pytestmark = pytest.mark.integration


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples named ``name`` from Prometheus text, keyed by their sorted labels."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def wait_ready(http: httpx.AsyncClient) -> None:
    """Until the service at ``http``'s base URL answers /readyz with 200."""

    async def ready() -> bool:
        try:
            return (await http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    await wait_for(ready, what="/readyz 200")


async def test_metrics_over_http_show_what_the_service_did(
    redis_url: str, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"t.{unique}"
    poison = make_event(0)
    handled: list[str] = []

    async def handler(message: Message[Any]) -> None:
        if message.event.id == poison.id:
            raise PermanentError("bad amount")
        handled.append(message.event.id)

    await Publisher(redis_client).publish_many(
        [poison, *(make_event(i) for i in range(1, 5))], stream=stream
    )
    port = free_port()
    service = Service(
        ServiceSettings(service_name="metrics-test", port=port),
        redis_settings=RedisSettings(url=redis_url),
        consumer_settings=fast_settings(),
    )
    service.subscribe(stream, handler, group="g")
    serving = asyncio.create_task(service.serve())
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            await wait_ready(http)
            await wait_for(lambda: len(handled) == 4, what="4 handled")
            await wait_for(
                lambda: redis_client.xlen(keys.dead_letter_key(stream)), what="poison dead-lettered"
            )

            async def acked() -> bool:
                summary = await redis_client.xpending(keys.stream_key(stream), "g")
                return int(summary["pending"]) == 0

            await wait_for(acked, what="everything acknowledged")
            labels = (("group", "g"), ("stream", stream), ("type", TEST_TYPE))
            text = ""

            async def counted() -> bool:
                # the counter moves once the acknowledging script's answer is read, which
                # may come a moment after Redis shows nothing pending
                nonlocal text
                text = (await http.get("/metrics")).text
                return samples(text, "riverbed_acknowledged_total").get(labels) == 4

            await wait_for(counted, what="4 acknowledgements counted")
            assert samples(text, "riverbed_consumed_total")[labels] == 5
            dead = samples(text, "riverbed_dead_lettered_total")
            assert (
                dead[
                    (
                        ("group", "g"),
                        ("reason", "permanent"),
                        ("stream", stream),
                        ("type", TEST_TYPE),
                    )
                ]
                == 1
            )
            assert samples(text, "riverbed_handler_seconds_count")[labels] == 5
            assert samples(text, "riverbed_stream_length")[(("stream", stream),)] == 5
            assert samples(text, "riverbed_dead_letter_depth")[(("stream", stream),)] == 1
            group = (("group", "g"), ("stream", stream))
            assert samples(text, "riverbed_group_pending")[group] == 0
            assert samples(text, "riverbed_group_lag")[group] == 0
            assert samples(text, "riverbed_oldest_pending_age_seconds")[group] == 0
            assert samples(text, "riverbed_redis_used_memory_bytes")[()] > 0
            assert (await http.get("/healthz")).json() == {"status": "ok"}
    finally:
        service.request_stop()
        await asyncio.wait_for(serving, 20)


async def test_start_up_objects_are_frozen_out_of_full_collections(redis_url: str) -> None:
    # full collections walking the start-up heap were the gateway's latency tail
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    port = free_port()
    service = Service(
        ServiceSettings(service_name="freeze-test", port=port),
        redis_settings=RedisSettings(url=redis_url),
        consumer_settings=fast_settings(),
    )
    serving = asyncio.create_task(service.serve())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await wait_ready(http)
        assert gc.get_freeze_count() > 0
    finally:
        service.request_stop()
        await asyncio.wait_for(serving, 20)
        gc.unfreeze()  # the rest of the test session collects as usual


SERVICE_SCRIPT = """
import os

from riverbed.service import Service
from riverbed.settings import ServiceSettings

port = int(os.environ["SERVICE_PORT"])
Service(ServiceSettings(service_name="log-test", port=port, log_format="json")).run()
"""


async def test_a_running_service_names_itself_on_every_log_line(
    redis_url: str, processes: Processes, tmp_path: Path
) -> None:
    script = tmp_path / "service.py"
    script.write_text(SERVICE_SCRIPT)
    port = free_port()
    env = {"REDIS_URL": redis_url, "SERVICE_PORT": str(port)}
    process = processes.start("service", script, env)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        await wait_ready(http)
    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 20) == 0
    lines = [json.loads(line) for line in processes.log("service").splitlines() if line]
    assert "service stopped" in [line["event"] for line in lines]
    assert {line.get("service") for line in lines} == {"log-test"}


async def test_readiness_fails_when_a_consumer_loop_has_died(redis_url: str, unique: str) -> None:
    async def handler(message: Message[Any]) -> None:
        return None

    service = Service(
        ServiceSettings(service_name="ready-test", port=free_port()),
        redis_settings=RedisSettings(url=redis_url),
        consumer_settings=fast_settings(),
    )
    service.subscribe(f"t.{unique}", handler, group="g")
    await service.start()
    try:
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            await wait_for(lambda: all(c.healthy for c in service.consumers))
            assert (await http.get("/readyz")).status_code == 200
            service.consumers[0].stop()
            response = await http.get("/readyz")
            assert response.status_code == 503
            assert "not running" in response.json()["checks"]["consumers"]["detail"]
    finally:
        await service.stop()


async def test_lag_unknown_to_redis_is_counted_or_left_without_a_sample(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    from riverbed import metrics

    stream = f"t.{unique}"
    key = keys.stream_key(stream)
    ids = await Publisher(redis_client).publish_many(
        [make_event(i) for i in range(4)], stream=stream
    )
    await redis_client.xgroup_create(key, "g", id="0")
    await redis_client.xreadgroup("g", "c", {key: ">"}, count=1)
    await redis_client.xdel(key, ids[2])  # a deletion past the group makes Redis' lag unknown
    [group] = await redis_client.xinfo_groups(key)
    assert group["lag"] is None

    await StreamMonitor(redis_client, [stream]).refresh(force=True)
    assert metrics.GROUP_LAG.labels(stream, "g")._value.get() == 2  # counted: ids[1], ids[3]

    await StreamMonitor(redis_client, [stream], lag_count_limit=1).refresh(force=True)
    exported = {tuple(s.labels.values()) for m in metrics.GROUP_LAG.collect() for s in m.samples}
    assert (stream, "g") not in exported, "unknown lag is no sample, never 0"


async def test_retention_trims_only_what_every_group_acknowledged(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"t.{unique}"
    key = keys.stream_key(stream)
    ids = await Publisher(redis_client).publish_many(
        [make_event(i) for i in range(300)], stream=stream
    )
    await redis_client.xgroup_create(key, "fast", id="0")
    await redis_client.xgroup_create(key, "slow", id="0")
    await redis_client.xreadgroup("fast", "c", {key: ">"}, count=300)
    await redis_client.xack(key, "fast", *ids)
    await redis_client.xreadgroup("slow", "c", {key: ">"}, count=250)
    await redis_client.xack(key, "slow", *ids[:200])  # 200..249 pending, 250.. undelivered

    monitor = StreamMonitor(redis_client, [stream])
    removed = await monitor.trim_acknowledged(stream)
    remaining = [entry_id.decode() for entry_id, _ in await redis_client.xrange(key)]
    assert 0 < removed <= 200
    assert set(ids[200:]) <= set(remaining), "pending and undelivered entries are kept"
    assert len(remaining) == 300 - removed


async def test_the_cache_can_live_on_a_redis_of_its_own(
    redis_url: str, redis_client: redis.asyncio.Redis, own_redis: Any, unique: str
) -> None:
    from datetime import timedelta

    from riverbed.cache import Cache

    service = Service(
        ServiceSettings(service_name="cache-test", port=free_port()),
        redis_settings=RedisSettings(url=redis_url, cache_url=own_redis.url),
        consumer_settings=fast_settings(),
    )
    await service.start()
    try:
        entries = Cache(service.cache_redis).namespace(f"t-{unique}", ttl=timedelta(minutes=1))
        await entries.set("k", {"v": 1})
        assert await entries.get("k") == {"v": 1}
        cache_side = redis.asyncio.Redis.from_url(own_redis.url)
        try:
            assert [key async for key in cache_side.scan_iter(match=f"*t-{unique}*")]
        finally:
            await cache_side.aclose()
        on_streams_redis = [key async for key in redis_client.scan_iter(match=f"*t-{unique}*")]
        assert on_streams_redis == [], "no cache key on the streams' Redis"
    finally:
        await service.stop()


async def test_without_a_cache_url_the_cache_shares_the_streams_redis(redis_url: str) -> None:
    service = Service(
        ServiceSettings(service_name="cache-test", port=free_port()),
        redis_settings=RedisSettings(url=redis_url),
        consumer_settings=fast_settings(),
    )
    await service.start()
    try:
        assert service.cache_redis is service.redis
    finally:
        await service.stop()


async def test_the_lifespan_resumes_after_the_drain_while_redis_is_still_open(
    redis_url: str, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream, marker = f"t.{unique}", f"test:{unique}:drained"
    handled: list[str] = []
    release = asyncio.Event()

    async def slow(message: Message[Any]) -> None:
        await release.wait()
        handled.append(message.event.id)

    @contextlib.asynccontextmanager
    async def lifespan(settings: ServiceSettings, resources: Resources) -> AsyncIterator[None]:
        yield None
        # after the yield: the last handler has finished, and the service's Redis answers
        await resources.redis.set(marker, ",".join(handled))

    service = Service(
        ServiceSettings(service_name="drain-test", port=free_port()),
        lifespan,
        redis_settings=RedisSettings(url=redis_url),
        consumer_settings=fast_settings(),
    )
    service.subscribe(stream, slow, group="g")
    await service.start()
    event = make_event(1)
    await Publisher(redis_client).publish(event, stream=stream)
    await wait_for(lambda: len(service.consumers[0]._in_flight) == 1, what="handler running")
    stopping = asyncio.create_task(service.stop())
    release.set()
    await stopping
    assert await redis_client.get(marker) == event.id.encode()


async def test_a_background_loop_stops_even_when_a_redis_call_swallows_its_cancellation() -> None:
    from riverbed.background import cancel_tasks, every

    inside = asyncio.Event()

    async def swallowing() -> None:
        # what redis-py's client can do to a cancel that lands inside a command
        inside.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass
        finally:
            inside.clear()

    task = asyncio.create_task(every(0.0, swallowing, failing="never"))
    await inside.wait()  # the cancel lands inside the work, as it would inside a command
    await asyncio.wait_for(cancel_tasks(task), timeout=5)
    assert task.cancelled()


async def _closed_by_the_server(reader: asyncio.StreamReader, wait_s: float) -> bytes:
    """Everything the server sends until it closes the connection; fails past ``wait_s``."""
    return await asyncio.wait_for(reader.read(), timeout=wait_s)


async def test_connections_without_a_complete_request_head_are_closed(redis_url: str) -> None:
    """uvicorn keeps a connection that sends nothing, or half a request head, open forever
    (a probe found both still open after 90 s): the runtime's head timeout closes them, and a
    request whose head arrives in time is answered as ever."""
    port = free_port()
    service = Service(
        ServiceSettings(
            service_name="head-timeout-test",
            port=port,
            header_timeout_s=0.5,
            keep_alive_timeout_s=1,
        ),
        redis_settings=RedisSettings(url=redis_url),
    )
    serving = asyncio.create_task(service.serve())
    wait_s = 10.0  # s: far past both timeouts; the only bound, never a measured duration
    opened: list[asyncio.StreamWriter] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await wait_ready(http)

        async def connect() -> asyncio.StreamReader:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            opened.append(writer)
            return reader

        half = await connect()  # half a request head, then nothing
        opened[-1].write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        await opened[-1].drain()
        idle = await connect()  # not a byte
        after = await connect()  # a whole request, then half of the next one
        opened[-1].write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /heal")
        await opened[-1].drain()

        assert await _closed_by_the_server(half, wait_s) == b""
        assert await _closed_by_the_server(idle, wait_s) == b""
        answered = await _closed_by_the_server(after, wait_s)
        assert answered.startswith(b"HTTP/1.1 200 OK"), answered
        assert answered.count(b"HTTP/1.1") == 1, "the half request got no answer"
    finally:
        for writer in opened:
            writer.close()
        service.request_stop()
        await asyncio.wait_for(serving, 20)
