"""Real degradation of a real Redis sets off the shipped Redis alerts in a real Prometheus.

Three private redis-servers, one per fault so that the faults run at once and do not mask
each other, each watched by a small real Service (a process, probing every 0.2 s) that
Prometheus (Debian's binary, 1 s scrape and evaluation) scrapes with the SHIPPED rule file,
its ``for:`` durations shortened to seconds. Before any fault every alert is inactive;
then:

- latency: ``DEBUG SLEEP 0.3`` in a loop  -> RiverbedRedisLatencyHigh
- memory: keys with a TTL written past ``maxmemory`` (volatile-lru)
  -> RiverbedRedisMemoryHigh and RiverbedRedisEvictingKeys
- persistence: the AOF grows past the file size the process may write (RLIMIT_FSIZE, which
  binds root too, unlike a read-only mode) -> ``aof_last_write_status:err``
  -> RiverbedRedisPersistenceFailing

and each alert is watched, through Prometheus's /api/v1/alerts, go from inactive to firing.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import redis.exceptions
import yaml

from riverbed.testing import RedisServer, free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "riverbed.yml"

pytestmark = [
    pytest.mark.integration,
    # s: the waits below are bounded for a loaded machine; the run takes ~20 s when idle
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        shutil.which("prometheus") is None or shutil.which("redis-server") is None,
        reason="needs the prometheus server and redis-server "
        "(Debian: apt-get install prometheus redis-server; .ci/run does)",
    ),
]

SERVICE_SCRIPT = """
import os
from riverbed.service import Service
from riverbed.settings import ServiceSettings
Service(ServiceSettings(service_name=os.environ["NAME"], port=int(os.environ["PORT"]))).run()
"""

AOF_LIMIT_BYTES = 2 * 1024 * 1024  # the persistence Redis may not write a file past this
FAULTS = {
    # job (one Service, one Redis) -> the alerts its fault must fire
    "riverbed-latency": ["RiverbedRedisLatencyHigh"],
    "riverbed-memory": ["RiverbedRedisMemoryHigh", "RiverbedRedisEvictingKeys"],
    "riverbed-persistence": ["RiverbedRedisPersistenceFailing"],
}


class Started:
    """Processes this test starts: SIGTERM (then SIGKILL) at teardown; logs in a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.directory / f"{name}.log", "ab") as log:  # the child keeps its copy
            self.processes[name] = subprocess.Popen(
                args,
                env={**os.environ, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Started]:
    processes = Started(tmp_path)
    try:
        yield processes
    finally:
        processes.stop_all()


def limit_file_size() -> None:
    """In the persistence Redis (before exec): no file past ``AOF_LIMIT_BYTES``, so its AOF
    writes fail (EFBIG) as on a full disk. SIGXFSZ is ignored (that survives exec), so the
    write fails instead of the signal killing Redis."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (AOF_LIMIT_BYTES, AOF_LIMIT_BYTES))


@pytest.fixture
def redis_servers() -> Iterator[dict[str, RedisServer]]:
    directory = Path(tempfile.mkdtemp(prefix="rb-alerts-"))
    servers: dict[str, RedisServer] = {}
    for job in FAULTS:
        (directory / job).mkdir()
    servers["riverbed-latency"] = RedisServer(
        directory / "riverbed-latency", extra_config={"enable-debug-command": "yes"}
    )
    servers["riverbed-memory"] = RedisServer(
        directory / "riverbed-memory",
        extra_config={"maxmemory": "8mb", "maxmemory-policy": "volatile-lru"},
    )
    servers["riverbed-persistence"] = RedisServer(
        directory / "riverbed-persistence",
        # everysec: with "always" Redis exits on a failed AOF write instead of refusing writes
        extra_config={"appendonly": "yes", "appendfsync": "everysec"},
        preexec=limit_file_size,
    )
    try:
        for server in servers.values():
            server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def shortened_rules(directory: Path) -> Path:
    """The shipped rule file, every ``for:`` cut to 2 s (an alert still passes through
    pending); expressions, thresholds and windows as shipped."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "2s"
    path = directory / "rules.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def prometheus_config(directory: Path, ports: dict[str, int]) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(shortened_rules(directory))],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in ports.items()
        ],
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


# -- the faults ------------------------------------------------------------------------------


def sleep_in_a_loop(server: RedisServer, stop: threading.Event) -> None:
    """Redis busy in 300 ms stretches, one after another, until ``stop``."""
    client = redis.Redis(port=server.port)
    try:
        while not stop.is_set():
            client.execute_command("DEBUG", "SLEEP", "0.3")
    finally:
        client.close()


def fill_memory(server: RedisServer) -> None:
    """Keys with a TTL (evictable under volatile-lru), 4 MB past the 8 MB maxmemory."""
    client = redis.Redis(port=server.port)
    try:
        pipe = client.pipeline(transaction=False)
        for index in range(1_200):
            pipe.set(f"filler:{index}", b"x" * 10_000, ex=3_600)
        pipe.execute()
    finally:
        client.close()


def overflow_the_aof(server: RedisServer) -> None:
    """Write until the AOF passes the file size limit and Redis refuses writes (MISCONF)."""
    client = redis.Redis(port=server.port)
    refused = ""
    try:
        for index in range(AOF_LIMIT_BYTES // 10_000 * 2):
            client.set(f"filler:{index}", b"x" * 10_000)
    except redis.exceptions.ResponseError as error:  # what the services' writes get too
        refused = str(error)
    finally:
        client.close()
    assert "AOF" in refused, f"writes were not refused: {refused!r}"
    status = redis.Redis(port=server.port).info("persistence")["aof_last_write_status"]
    assert status == "err", f"the AOF write did not fail: {status}"


# -- the test ---------------------------------------------------------------------------------


async def alert_states(prometheus: httpx.AsyncClient) -> dict[tuple[str, str], str]:
    """(alert name, job or node) -> pending | firing, of every active alert."""
    alerts = (await prometheus.get("/api/v1/alerts")).json()["data"]["alerts"]
    return {
        (a["labels"]["alertname"], a["labels"].get("node") or a["labels"].get("job", "")): a[
            "state"
        ]
        for a in alerts
    }


async def test_injected_redis_faults_fire_their_alerts(
    redis_servers: dict[str, RedisServer], started: Started, tmp_path: Path
) -> None:
    script = tmp_path / "service.py"
    script.write_text(SERVICE_SCRIPT)
    ports = {job: free_port() for job in FAULTS}
    for job, server in redis_servers.items():
        started.start(
            job,
            [sys.executable, str(script)],
            {
                "NAME": job,
                "PORT": str(ports[job]),
                "REDIS_URL": server.url,
                "RIVERBED_REDIS_PROBE_INTERVAL_S": "0.2",
                "RIVERBED_REDIS_PROBE_TIMEOUT_S": "2",  # a slow PING is slow, not down
                "PYTHONUNBUFFERED": "1",
            },
        )
    prometheus_port = free_port()
    started.start(
        "prometheus",
        [
            "prometheus",
            f"--config.file={prometheus_config(tmp_path, ports)}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
            "--log.level=warn",
        ],
    )
    nodes = {job: f"127.0.0.1:{server.port}" for job, server in redis_servers.items()}
    expected = {(alert, nodes[job]) for job, alerts in FAULTS.items() for alert in alerts}
    # RiverbedRedisMemoryHigh is over the fullest node, without a node label
    expected = {(a, "" if a == "RiverbedRedisMemoryHigh" else n) for a, n in expected}

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{prometheus_port}") as prometheus:

        async def every_node_sampled() -> bool:
            for name, process in started.processes.items():
                assert process.poll() is None, f"{name} exited:\n{started.log(name)}"
            try:
                # three samples of each node: rates and increases have a healthy start
                query = "min by (node) (count_over_time(riverbed_redis_up[1m])) >= 3"
                answer = await prometheus.get("/api/v1/query", params={"query": query})
            except httpx.TransportError:
                return False
            if answer.status_code != 200:  # 503 "Service Unavailable" while it starts up
                return False
            result = answer.json()["data"]["result"]
            return {sample["metric"]["node"] for sample in result} == set(nodes.values())

        # bounded generously: three service processes and Prometheus start on a loaded CI machine
        await wait_for(every_node_sampled, 90, "every Redis probed and scraped")
        await evaluated_twice_from_now(prometheus)  # over healthy samples: nothing active
        healthy = await alert_states(prometheus)
        assert not {key for key in healthy if key[0].startswith("RiverbedRedis")}, healthy

        stop_sleeping = threading.Event()
        sleeper = asyncio.create_task(
            asyncio.to_thread(sleep_in_a_loop, redis_servers["riverbed-latency"], stop_sleeping)
        )
        try:
            await asyncio.gather(
                asyncio.to_thread(fill_memory, redis_servers["riverbed-memory"]),
                asyncio.to_thread(overflow_the_aof, redis_servers["riverbed-persistence"]),
            )

            async def all_firing() -> bool:
                states = await alert_states(prometheus)
                return all(states.get(key) == "firing" for key in expected)

            try:
                await wait_for(all_firing, 60, "every injected fault's alert firing")
            except BaseException:
                print("active alerts:", await alert_states(prometheus))
                raise
        finally:
            stop_sleeping.set()
            await sleeper
        # and nothing else: no Redis counted unreachable, no replica, no rejected connection
        others = {
            key
            for key, state in (await alert_states(prometheus)).items()
            if key[0].startswith("RiverbedRedis") and key not in expected
        }
        assert not others, others


async def evaluated_twice_from_now(prometheus: httpx.AsyncClient) -> None:
    """Until the Redis health rules have been evaluated twice more, all healthy."""

    async def last_evaluation() -> str:
        groups = (await prometheus.get("/api/v1/rules")).json()["data"]["groups"]
        (health,) = [g for g in groups if g["name"] == "riverbed-redis-health"]
        assert all(rule["health"] == "ok" for rule in health["rules"]), health
        return str(health["lastEvaluation"])

    for _ in range(2):
        before = await last_evaluation()

        async def evaluated_again(before: str = before) -> bool:
            return await last_evaluation() != before

        await wait_for(evaluated_again, 10, "a rule evaluation")
