"""Pytest plugin (``-p riverbed.testing.plugin``): a real Redis for integration tests,
provisioned as docs/conventions.md says.

Order: ``REDIS_URL`` if set; else a throwaway ``redis-server`` started on a free
loopback port in a temp dir; else testcontainers when a Docker daemon answers;
else the test fails with a message that says how to get Redis.

Tests that need to restart, flush or reconfigure Redis use ``own_redis``, which
always starts a private ``redis-server`` (skipping with a reason where none can
be started), so that they never touch a Redis they did not start.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from riverbed.connection import connect
from riverbed.consumer import Handler, StreamConsumer, Subscription
from riverbed.publisher import Publisher
from riverbed.settings import ConsumerSettings, RedisSettings
from riverbed.testing.helpers import ConsumerFactory, Processes, fast_settings
from riverbed.testing.servers import NO_REDIS_HELP, RedisServer, docker_redis_url


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis for integration tests; keys written there must be unique to the test."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured
        return
    if shutil.which("redis-server"):
        server = RedisServer(tmp_path_factory.mktemp("redis"))
        server.start()
        try:
            yield server.url
        finally:
            server.stop()
        return
    found = docker_redis_url()
    if found is not None:
        url, container = found
        try:
            yield url
        finally:
            container.stop()  # type: ignore[attr-defined]
        return
    pytest.fail(NO_REDIS_HELP, pytrace=False)


@pytest.fixture
def own_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """A private redis-server for tests that restart, flush or reconfigure Redis.

    It is a single node, also in a test run against a Redis Cluster (``REDIS_CLUSTER``
    is unset for the test, so settings made from the environment match it).
    """
    monkeypatch.delenv("REDIS_CLUSTER", raising=False)
    if shutil.which("redis-server") is None:
        pytest.skip("needs the redis-server binary to start a private Redis: " + NO_REDIS_HELP)
    short_dir = Path(tempfile.mkdtemp(prefix="rb-redis-"))
    server = RedisServer(short_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(short_dir, ignore_errors=True)


@pytest.fixture
def unique() -> str:
    """A short random token: tests name their streams and groups with it."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client of the test Redis (of a Redis Cluster when ``REDIS_CLUSTER=true``)."""
    settings = RedisSettings(url=redis_url)
    client: redis.asyncio.Redis = (
        connect(settings) if settings.cluster else redis.asyncio.Redis.from_url(redis_url)
    )
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def start_consumer(
    redis_client: redis.asyncio.Redis,
) -> AsyncIterator[ConsumerFactory]:
    """Start consumers on the test's Redis; all are stopped and drained at teardown."""
    started: list[StreamConsumer] = []

    def factory(
        stream: str,
        handler: Handler,
        *,
        group: str = "test",
        name: str = "c1",
        settings: ConsumerSettings | None = None,
        **subscription: Any,
    ) -> StreamConsumer:
        consumer = StreamConsumer(
            redis_client,
            Subscription(stream=stream, group=group, handler=handler, **subscription),
            settings=settings or fast_settings(),
            consumer_name=name,
            service="test-service",
        )
        consumer.start()
        started.append(consumer)
        return consumer

    yield factory
    for consumer in started:
        consumer.stop()
    await asyncio.gather(*(c.join() for c in started))


@pytest.fixture
def publisher(redis_client: redis.asyncio.Redis) -> Publisher:
    return Publisher(redis_client)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.kill_all()
