"""Each service watches its Redis (riverbed.redis_health, riverbed.redis_timing,
riverbed.redis_config), against real redis-server processes: the PING probe, the INFO
gauges, what a managed Redis refuses, the command-family histogram, the start-up check of
the eviction policy, and /readyz when Redis stops or hangs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio
import structlog
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from riverbed import keys, redis_config
from riverbed.connection import Redis, connect
from riverbed.redis_config import EX_CONFIG, UnsafeRedisConfiguration, check_eviction_policy
from riverbed.redis_health import RedisHealth, node_name, nodes_of
from riverbed.redis_timing import FAMILIES, command_family
from riverbed.service import Service
from riverbed.settings import RedisHealthSettings, RedisSettings, ServiceSettings
from riverbed.testing import RedisServer, free_port, wait_for

pytestmark = pytest.mark.integration

FAST = RedisHealthSettings(probe_interval_s=0.2, probe_timeout_s=0.5)


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A private redis-server with an append-only file (own_redis runs without one)."""
    directory = Path(tempfile.mkdtemp(prefix="rb-health-"))
    config = {"appendonly": "yes", "enable-debug-command": "yes"}  # DEBUG SLEEP: a spike
    server = RedisServer(directory, extra_config=config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def client_of(private_redis: RedisServer) -> AsyncIterator[Redis]:
    client = connect(RedisSettings(url=private_redis.url, cluster=False))
    try:
        yield client
    finally:
        await client.aclose()


async def test_probe_and_info_gauges_describe_the_node(client_of: Redis) -> None:
    await client_of.config_set("slowlog-log-slower-than", 0)  # µs: every command is slow
    await client_of.config_set("latency-monitor-threshold", 1)  # ms
    await client_of.execute_command("DEBUG", "SLEEP", "0.01")  # a 10 ms latency event
    node = node_name(client_of)
    pings = value("riverbed_redis_ping_seconds_count", node=node) or 0.0

    await RedisHealth(FAST).probe_and_sample(client_of)

    assert value("riverbed_redis_up", node=node) == 1
    assert value("riverbed_redis_ping_seconds_count", node=node) == pings + 1
    assert (value("riverbed_redis_connected_clients", node=node) or 0) >= 1
    assert value("riverbed_redis_aof_enabled", node=node) == 1
    assert value("riverbed_redis_aof_last_write_ok", node=node) == 1
    assert value("riverbed_redis_rdb_last_bgsave_ok", node=node) == 1
    assert value("riverbed_redis_is_primary", node=node) == 1
    assert value("riverbed_redis_primary_link_up", node=node) is None  # a primary has none
    assert value("riverbed_redis_evicted_keys", node=node) == 0
    assert (value("riverbed_redis_node_used_memory_bytes", node=node) or 0) > 0
    assert value("riverbed_redis_node_maxmemory_bytes", node=node) == 0
    assert (value("riverbed_redis_slowlog_length", node=node) or 0) > 0
    latest = value("riverbed_redis_latency_latest_seconds", node=node, event="command")
    assert latest is not None
    assert latest >= 0.01


async def test_every_node_of_the_test_redis_is_probed(redis_url: str) -> None:
    """Each node of a Redis Cluster (under `make test-cluster`) has its own series."""
    settings = RedisSettings(url=redis_url)
    client = connect(settings)
    try:
        await client.ping()  # a Cluster client learns its nodes on the first command
        await RedisHealth(FAST).probe_and_sample(client)
        await check_eviction_policy(client)  # the test Redis: noeviction everywhere
        names = [node.name for node in nodes_of(client)]
    finally:
        await client.aclose()
    assert len(names) == (3 if settings.cluster else 1)
    for name in names:
        assert value("riverbed_redis_up", node=name) == 1
        assert (value("riverbed_redis_node_used_memory_bytes", node=name) or 0) > 0


async def test_a_replica_reports_its_link_to_the_primary(private_redis: RedisServer) -> None:
    directory = Path(tempfile.mkdtemp(prefix="rb-replica-"))
    replica = RedisServer(directory, extra_config={"replicaof": f"127.0.0.1 {private_redis.port}"})
    replica.start()
    client = connect(RedisSettings(url=replica.url, cluster=False))
    health, node = RedisHealth(FAST), node_name(client)
    try:

        async def link(expected: float) -> bool:
            await health.probe_and_sample(client)
            return value("riverbed_redis_primary_link_up", node=node) == expected

        await wait_for(lambda: link(1.0), what="the replica's link up")
        assert value("riverbed_redis_is_primary", node=node) == 0
        private_redis.stop()
        await wait_for(lambda: link(0.0), what="the replica's link down")
    finally:
        await client.aclose()
        replica.stop()


async def test_a_redis_that_refuses_health_commands_is_sampled_as_far_as_allowed(
    private_redis: RedisServer, client_of: Redis
) -> None:
    """A managed Redis: an ACL user without SLOWLOG, LATENCY and CONFIG."""
    await client_of.acl_setuser(
        "app",
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        commands=["+@all", "-slowlog", "-latency", "-config"],
    )
    url = private_redis.url.replace("redis://", "redis://app:secret@")
    client = connect(RedisSettings(url=url, cluster=False))
    health, node = RedisHealth(FAST), node_name(client)
    try:
        with capture_logs() as logs:
            await health.probe_and_sample(client)
            await health.probe_and_sample(client)
        refused = [entry["command"] for entry in logs if "refuses" in entry["event"]]
        assert refused == ["SLOWLOG LEN", "LATENCY LATEST"]  # once each, not every round
        assert value("riverbed_redis_up", node=node) == 1
        assert value("riverbed_redis_aof_enabled", node=node) == 1
        assert await health.ready() == (False, "not connected")  # run() was never called
    finally:
        await client.aclose()


def test_command_families_are_bounded_and_blocking_reads_are_apart() -> None:
    assert command_family(("XADD", "k", "*")) == "stream-write"
    assert command_family(("XREADGROUP", b"GROUP", "g", "c", b"COUNT", 1)) == "stream-read"
    blocking = ("XREADGROUP", b"GROUP", "g", "c", b"BLOCK", 2000, b"STREAMS", "k", ">")
    assert command_family(blocking) == "stream-read-blocking"
    assert command_family(("XINFO GROUPS", "k")) == "stream-read"
    assert command_family(("EVALSHA", "abc", 1, "k")) == "script"
    assert command_family(("SET", "k", "v")) == "key"
    assert command_family(("CONFIG GET", "maxmemory*")) == "server"
    assert command_family(("SOMETHING-NEW",)) == "key"
    assert set(FAMILIES) >= {command_family((name,)) for name in ("PING", "XACK", "GET")}


async def test_the_runtimes_redis_calls_are_timed_by_family(redis_url: str, unique: str) -> None:
    """Against the test Redis: a Redis Cluster too, under `make test-cluster`."""
    client = connect(RedisSettings(url=redis_url))
    stream = keys.stream_key(f"t.{unique}")

    def counts() -> dict[str, float]:
        return {f: value("riverbed_redis_command_seconds_count", family=f) or 0.0 for f in FAMILIES}

    before = counts()
    try:
        await client.xadd(stream, {"n": "1"})
        await client.xgroup_create(stream, "g", id="0")
        await client.xreadgroup("g", "c", {stream: ">"}, count=1)
        await client.xreadgroup("g", "c", {stream: ">"}, count=1, block=10)
        await client.eval("return 1", 1, stream)
        await client.set(f"{stream}:plain", "1", ex=60)
        await client.get(f"{stream}:plain")
        async with client.pipeline(transaction=False) as pipe:
            pipe.xlen(stream)
            pipe.xlen(stream)
            await pipe.execute()
        grew = {family: counts()[family] - before[family] for family in FAMILIES}
    finally:
        await client.delete(stream)
        await client.delete(f"{stream}:plain")
        await client.aclose()
    assert grew["stream-write"] == 2  # XADD, XGROUP CREATE
    assert grew["stream-read"] == 1
    assert grew["stream-read-blocking"] == 1
    assert grew["script"] == 1
    assert grew["key"] == 2  # SET, GET
    assert grew["pipeline"] == 1  # one round trip for the batch, not one per command


# -- start-up: the eviction policy -----------------------------------------------------------


def service_on(url: str) -> Service:  # type: ignore[type-arg]
    return Service(
        ServiceSettings(service_name="policy-test", port=free_port()),
        redis_settings=RedisSettings(url=url, cluster=False),
    )


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random"])
async def test_a_policy_that_can_evict_streams_refuses_the_start(
    own_redis: RedisServer, policy: str
) -> None:
    admin = redis.asyncio.Redis.from_url(own_redis.url)
    await admin.config_set("maxmemory-policy", policy)
    await admin.aclose()
    service = service_on(own_redis.url)
    with pytest.raises(UnsafeRedisConfiguration) as refused:
        await service.start()
    message = str(refused.value)
    assert f"maxmemory-policy {policy}" in message
    assert "noeviction" in message
    assert "volatile-" in message
    assert service._redis is None  # closed, and no lifespan ran


@pytest.mark.parametrize("policy", ["noeviction", "volatile-lru", "volatile-ttl"])
async def test_safe_policies_start_and_no_maxmemory_warns(
    own_redis: RedisServer, policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a fresh logger: one an earlier test used is cached past capture_logs' reach
    monkeypatch.setattr(redis_config, "log", structlog.get_logger(redis_config.__name__))
    admin = redis.asyncio.Redis.from_url(own_redis.url)
    await admin.config_set("maxmemory-policy", policy)
    with capture_logs() as logs:
        service = service_on(own_redis.url)
        await service.start()
        await service.stop()
    assert any("no maxmemory limit" in entry["event"] for entry in logs)
    await admin.config_set("maxmemory", "100mb")
    with capture_logs() as logs:
        service = service_on(own_redis.url)
        await service.start()
        await service.stop()
    await admin.aclose()
    assert not any("no maxmemory limit" in entry["event"] for entry in logs)


POLICY_SCRIPT = """
import os
from riverbed.service import Service
from riverbed.settings import ServiceSettings
Service(ServiceSettings(service_name="cli-test", port=int(os.environ["SERVICE_PORT"]))).run()
"""


def test_run_from_the_command_line_exits_78_on_an_unsafe_policy(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    import redis as sync_redis

    sync_redis.Redis(port=own_redis.port).config_set("maxmemory-policy", "allkeys-lru")
    script = tmp_path / "service.py"
    script.write_text(POLICY_SCRIPT)
    env = {**os.environ, "REDIS_URL": own_redis.url, "SERVICE_PORT": str(free_port())}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == EX_CONFIG, done.stdout + done.stderr
    assert "refusing to start" in done.stdout + done.stderr
    assert "allkeys-lru" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


# -- /readyz ----------------------------------------------------------------------------------


async def test_readiness_turns_503_when_redis_stops_or_hangs(own_redis: RedisServer) -> None:
    service = service_on(own_redis.url)
    service.redis_health.settings = RedisHealthSettings(probe_interval_s=0.3, probe_timeout_s=0.5)
    await service.start()
    node = node_name(service.redis)
    transport = httpx.ASGITransport(app=service.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:

            async def readiness() -> tuple[int, str]:
                answer = await http.get("/readyz")
                return answer.status_code, answer.json()["checks"]["redis"]["detail"]

            assert await readiness() == (200, "PING ok")
            # hung: the process stopped, its socket open; no PING answer within the timeout
            assert own_redis.process is not None
            own_redis.process.send_signal(signal.SIGSTOP)
            try:
                status, detail = await readiness()
                assert status == 503, detail
                await wait_for(
                    lambda: value("riverbed_redis_up", node=node) == 0, what="probe: down"
                )
                status, detail = await readiness()  # from the probe, without a PING
                assert (status, detail) == (
                    503,
                    f"failed at the last probe ({node}: no answer in time)",
                )
            finally:
                own_redis.process.send_signal(signal.SIGCONT)
            await wait_for(lambda: value("riverbed_redis_up", node=node) == 1, what="up again")
            assert (await readiness())[0] == 200
            own_redis.stop()  # gone: connections refused
            assert (await readiness())[0] == 503
            await wait_for(lambda: value("riverbed_redis_up", node=node) == 0, what="down")
            assert "failed at the last probe" in (await readiness())[1]
    finally:
        await asyncio.wait_for(service.stop(), 30)
