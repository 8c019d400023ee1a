"""Pytest plugin: a real Redis for integration tests, provisioned as docs/conventions.md says.

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
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import redis.asyncio

from riverbed.connection import connect
from riverbed.consumer import Handler, Message, StreamConsumer, Subscription
from riverbed.publisher import Publisher
from riverbed.settings import ConsumerSettings, RedisSettings
from riverbed_contracts import CloudEvent
from riverbed_contracts.registry import get_spec

NO_REDIS_HELP = (
    "no Redis for the integration tests: set REDIS_URL=redis://host:port/db, or install "
    "redis-server (Debian/Ubuntu: 'apt-get install redis-server'; macOS: 'brew install redis'), "
    "or start a Docker daemon so testcontainers can run one"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RedisServer:
    """A ``redis-server`` process this test session started and owns."""

    directory: Path
    port: int = field(default_factory=free_port)
    extra_config: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(NO_REDIS_HELP)
        args = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ]
        for name, value in self.extra_config.items():
            args += [f"--{name}", value]
        with open(self.directory / "redis.log", "ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 - our args
        self._wait_until_answering()

    def _wait_until_answering(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    log = (self.directory / "redis.log").read_text(errors="replace")
                    raise RuntimeError(f"redis-server exited at start:\n{log[-2000:]}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


#: hash slots of a Redis Cluster, shared out evenly between its masters
CLUSTER_SLOTS = 16_384


@dataclass
class LocalRedisCluster:
    """A throwaway Redis Cluster of ``masters`` redis-server processes on loopback (no
    replicas), for running the test suite against cluster mode."""

    directory: Path
    masters: int = 3
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, timeout_s: float = 30.0) -> None:
        for index in range(self.masters):
            node_dir = self.directory / f"node-{index}"
            node_dir.mkdir(parents=True, exist_ok=True)
            node = RedisServer(
                node_dir,
                extra_config={
                    "cluster-enabled": "yes",
                    "cluster-config-file": "nodes.conf",
                    "cluster-port": str(free_port()),  # the bus port, explicit (Redis 7.0+)
                    "cluster-node-timeout": "5000",  # ms
                },
            )
            self.nodes.append(node)
            node.start()
        # Any: redis-py leaves execute_command untyped; these are plain cluster commands
        clients: list[Any] = [redis.Redis(port=node.port) for node in self.nodes]
        try:
            share = CLUSTER_SLOTS // self.masters
            for index, client in enumerate(clients):
                first = index * share
                last = CLUSTER_SLOTS - 1 if index == self.masters - 1 else first + share - 1
                client.execute_command("CLUSTER ADDSLOTSRANGE", first, last)
            for node in self.nodes[1:]:
                bus_port = node.extra_config["cluster-port"]
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port, bus_port)
            deadline = time.monotonic() + timeout_s
            while not all(self._settled(client) for client in clients):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the local Redis Cluster did not form in {timeout_s:g} s")
                time.sleep(0.1)
        finally:
            for client in clients:
                client.close()

    def _settled(self, client: Any) -> bool:
        info = client.execute_command("CLUSTER INFO")  # parsed by redis-py into a dict
        return bool(
            info.get("cluster_state") == "ok"
            and int(info.get("cluster_known_nodes", 0)) == self.masters
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _docker_redis_url() -> tuple[str, object] | None:
    try:
        from testcontainers.redis import RedisContainer
    except ImportError:
        return None
    try:
        container = RedisContainer("redis:7.0")
        container.start()
    except Exception:
        return None
    host = container.get_container_host_ip()
    port = container.get_exposed_port(6379)
    return f"redis://{host}:{port}/0", container


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
    found = _docker_redis_url()
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


def sync_redis_client(redis_url: str) -> redis.Redis:
    """A blocking client of the test Redis for fixtures and checks outside the event loop:
    of a Redis Cluster when ``REDIS_CLUSTER=true``, as the services would connect."""
    if RedisSettings(url=redis_url).cluster:
        return cast(redis.Redis, redis.RedisCluster.from_url(redis_url))
    return redis.Redis.from_url(redis_url)


def redis_cli_args(redis_url: str) -> list[str]:
    """``redis-cli`` arguments that reach the test Redis (``-c`` follows a cluster's MOVED)."""
    return ["-u", redis_url, *(["-c"] if RedisSettings(url=redis_url).cluster else [])]


# -- helpers for tests of consumers -------------------------------------------

#: the event type the runtime tests publish; any registered type would do
TEST_TYPE = "payment.succeeded.v1"
TEST_STREAM = "payment.succeeded"


def make_event(n: int, **attributes: Any) -> CloudEvent:
    data = {
        "provider": "stripe",
        "provider_payment_id": f"pi_{n:06d}",
        "amount": 1000 + n,
        "currency": "EUR",
    }
    return CloudEvent(type=TEST_TYPE, data=data, source="urn:riverbed:test", **attributes)


async def wait_for(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout: float = 15.0,  # noqa: ASYNC109 - s; the deadline is what this helper is for
    what: str = "condition",
) -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds. Never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def fast_settings(**overrides: Any) -> ConsumerSettings:
    """Consumer settings with short timers, so behaviours show within a test's time."""
    values: dict[str, Any] = {
        "block_ms": 50,
        "visibility_timeout_ms": 1_000,
        "reclaim_interval_ms": 100,
        "retry_base_ms": 50,
        "retry_max_ms": 200,
        "retry_jitter": 0.0,
        "ack_flush_ms": 1,
        "max_deliveries": 3,
        "shutdown_timeout_s": 5,
        "heartbeat_interval_ms": 100,
        "heartbeat_timeout_ms": 1_000,
    }
    values.update(overrides)
    return ConsumerSettings(**values)


ConsumerFactory = Callable[..., StreamConsumer]


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


def message_for(event: CloudEvent, *, attempt: int = 1, entry_id: str = "0-1") -> Message[Any]:
    """The Message a handler would get for ``event``: for unit tests of handlers, no Redis.

    The payload is validated against the contract exactly as the consumer does it, so a
    handler test cannot pass on data the runtime would have dead-lettered.
    """
    spec = get_spec(event.type)
    return Message(event, spec.model.model_validate(event.data), entry_id, spec.stream, attempt)


class Processes:
    """Python scripts a test runs as real processes (for kill -9 and SIGTERM tests).

    Each writes its output to ``<tmp>/<name>.log``; every one still running is killed at
    teardown of the ``processes`` fixture.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, script: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Run ``script`` with this interpreter, the test's environment plus ``env``."""
        with open(self.tmp_path / f"{name}.log", "ab") as log:  # the child keeps its own copy
            process = subprocess.Popen(  # noqa: S603 - the test's own script
                [sys.executable, str(script)],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.running.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def kill_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.kill_all()


# -- databases of the services that own one (riverbed[sql]) ------------------------------


@dataclass(frozen=True)
class ScratchDatabase:
    """An empty database of one test: an SQLite file, or a PostgreSQL schema of its own."""

    url: str
    schema: str | None = None

    @property
    def dialect(self) -> str:
        return "sqlite" if self.url.startswith("sqlite") else "postgresql"


async def postgres_unreachable(url: str) -> str | None:
    """None when PostgreSQL answers at ``url`` (a postgresql+asyncpg URL), else why not."""
    import asyncpg  # type: ignore[import-untyped]  # a dependency of database services only

    try:
        connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        return f"{type(error).__name__}: {error}"
    await connection.close()
    return None


@asynccontextmanager
async def scratch_database(
    kind: str, *, sqlite_file: Path, postgres_url: str, schema: str, url_setting: str
) -> AsyncIterator[ScratchDatabase]:
    """``kind`` "sqlite" or "postgresql"; the PostgreSQL schema is dropped afterwards.

    Skips (printing why) when PostgreSQL is not reachable; ``url_setting`` names the
    variable that points the tests at another PostgreSQL.
    """
    if kind == "sqlite":
        yield ScratchDatabase(f"sqlite+aiosqlite:///{sqlite_file}")
        return
    import asyncpg

    why = await postgres_unreachable(postgres_url)
    if why is not None:
        print(f"PostgreSQL not reachable at {postgres_url}: {why}")
        pytest.skip(f"PostgreSQL not reachable at {postgres_url} ({why}); set {url_setting}")
    connection = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    await connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield ScratchDatabase(postgres_url, schema)
    finally:
        await connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await connection.close()


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")
