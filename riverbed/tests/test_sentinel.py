"""Redis through Sentinel: the settings that ask for it, refused when incomplete or
contradictory, and a client of the master the Sentinels name, which publishes and
consumes, and after a failover carries on against the promoted replica without a restart.

The primary, replica and Sentinels are private ``redis-server`` processes
(:class:`riverbed.testing.sentinel.LocalSentinelSet`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from pydantic import ValidationError
from redis.asyncio.sentinel import SentinelConnectionPool

from riverbed import keys
from riverbed.connection import Redis, connect, describe
from riverbed.consumer import Message, StreamConsumer, Subscription
from riverbed.publisher import Publisher
from riverbed.settings import RedisSettings
from riverbed.testing import TEST_STREAM, fast_settings, make_event, wait_for
from riverbed.testing.sentinel import MASTER_NAME, LocalSentinelSet


@pytest.fixture(autouse=True)
def _no_topology_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests say how to reach Redis themselves, also in a cluster test run."""
    for name in ("REDIS_CLUSTER", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER"):
        monkeypatch.delenv(name, raising=False)


# -- settings ---------------------------------------------------------------------


def test_sentinels_are_read_from_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_SENTINELS", "10.0.0.1:26379, sentinel-b:26380,[::1]:26381")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "main")
    settings = RedisSettings()
    assert settings.sentinels == [("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381)]
    assert describe(settings) == (
        "master 'main' of Sentinels 10.0.0.1:26379,sentinel-b:26380,::1:26381"
    )


@pytest.mark.parametrize("entry", ["sentinel-a", "sentinel-a:", ":26379", "a:port", "a:70000"])
def test_a_sentinel_that_is_not_host_port_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    monkeypatch.setenv("REDIS_SENTINELS", f"10.0.0.1:26379,{entry}")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "main")
    with pytest.raises(ValidationError) as refused:
        RedisSettings()
    assert f"REDIS_SENTINELS entry {entry!r} is not host:port" in str(refused.value)


@pytest.mark.parametrize(
    ("environment", "says"),
    [
        ({"REDIS_SENTINELS": "10.0.0.1:26379"}, "REDIS_SENTINEL_MASTER is not"),
        ({"REDIS_SENTINEL_MASTER": "main"}, "REDIS_SENTINELS is not"),
        (
            {
                "REDIS_SENTINELS": "10.0.0.1:26379",
                "REDIS_SENTINEL_MASTER": "main",
                "REDIS_CLUSTER": "true",
            },
            "REDIS_CLUSTER and REDIS_SENTINELS are exclusive",
        ),
        (
            {
                "REDIS_SENTINELS": "10.0.0.1:26379",
                "REDIS_SENTINEL_MASTER": "main",
                "REDIS_URL": "unix:///run/redis.sock",
            },
            "use redis:// or rediss://",
        ),
    ],
)
def test_incomplete_or_contradictory_sentinel_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], says: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        RedisSettings()
    assert says in str(refused.value)


# -- a real primary, replica and three Sentinels ------------------------------------


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[LocalSentinelSet]:
    started = LocalSentinelSet(tmp_path)
    try:
        started.start()
        yield started
    finally:
        started.stop()


def through(sentinel_set: LocalSentinelSet, **overrides: Any) -> RedisSettings:
    environment = sentinel_set.environment()
    return RedisSettings(
        url=environment["REDIS_URL"],  # its host and port lead nowhere: Sentinel must
        sentinels=environment["REDIS_SENTINELS"],
        sentinel_master=MASTER_NAME,
        socket_timeout=2,
        connect_timeout=1,
        **overrides,
    )


@pytest.fixture
async def via_sentinel(sentinel_set: LocalSentinelSet) -> AsyncIterator[Redis]:
    client = connect(through(sentinel_set))
    try:
        yield client
    finally:
        await client.aclose()


async def test_the_cache_follows_sentinel_unless_it_has_a_url_of_its_own(
    sentinel_set: LocalSentinelSet, tmp_path: Path
) -> None:
    shared = connect(through(sentinel_set), cache=True)
    own = connect(through(sentinel_set, cache_url=sentinel_set.replica.url), cache=True)
    try:
        assert isinstance(shared.connection_pool, SentinelConnectionPool)
        await shared.set("cache-probe", "1")
        assert not isinstance(own.connection_pool, SentinelConnectionPool)
        assert (await own.info("replication"))["role"] == "slave"
    finally:
        await shared.aclose()
        await own.aclose()


async def test_a_failover_is_followed_without_a_restart(
    sentinel_set: LocalSentinelSet, via_sentinel: Redis
) -> None:
    """Publish and consume through Sentinel; kill -9 the primary, with writers busy; once
    the replica is promoted the same publisher and the same consumer carry on against it,
    and the client still knows every Sentinel."""
    received: list[str] = []

    async def handler(message: Message[Any]) -> None:
        received.append(message.event.id)

    consumer = StreamConsumer(
        via_sentinel,
        Subscription(stream=TEST_STREAM, group="sentinel-test", handler=handler),
        settings=fast_settings(),
        consumer_name="c1",
        service="test-service",
    )
    consumer.start()
    publisher = Publisher(via_sentinel)
    try:
        before = make_event(1)
        await publisher.publish(before)
        await wait_for(lambda: before.id in received, what="the event published via Sentinel")
        # replication is asynchronous: make sure the replica holds it before the kill
        assert await via_sentinel.wait(1, 5000) == 1
        async with redis.asyncio.Redis(port=sentinel_set.primary.port) as primary:
            assert await primary.xlen(keys.stream_key(TEST_STREAM)) == 1  # the master it found

        stop = asyncio.Event()

        async def writing() -> None:  # connections opened together after the failover
            while not stop.is_set():
                with contextlib.suppress(redis.RedisError):
                    await via_sentinel.set("sentinel-test-load", "1")
                await asyncio.sleep(0.005)  # s

        writers = [asyncio.create_task(writing()) for _ in range(8)]
        sentinel_set.kill_primary()
        await asyncio.to_thread(sentinel_set.wait_for_promotion)
        after = make_event(2)

        async def published() -> bool:
            try:
                await publisher.publish(after)
            except redis.ConnectionError:  # a connection of the dead primary, dropped now
                return False
            return True

        await wait_for(published, what="a publish to the promoted replica")
        stop.set()
        await asyncio.gather(*writers)
        # every Sentinel still known: lookups run at once by those writers lost none of them
        manager: Any = via_sentinel.connection_pool.sentinel_manager  # type: ignore[attr-defined]
        known = {c.connection_pool.connection_kwargs["port"] for c in manager.sentinels}
        assert known == {sentinel.port for sentinel in sentinel_set.sentinels}
        await wait_for(lambda: after.id in received, what="the consumer reading the new master")
        async with redis.asyncio.Redis(port=sentinel_set.replica.port) as promoted:
            assert await promoted.xlen(keys.stream_key(TEST_STREAM)) == 2
    finally:
        consumer.stop()
        await consumer.join()
