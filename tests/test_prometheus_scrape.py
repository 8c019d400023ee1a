"""A real Prometheus scrapes a running gateway and a running email service, and the Redis
exporter beside Redis.

Everything runs on loopback: a private redis-server, the gateway and the email service
as real processes (their console entry points), and Debian's ``prometheus`` server with
the shipped scrape configuration (targets pointed at the processes' ports, the shipped
alert rules loaded). The test asks Prometheus's HTTP API, not the services, whether the
targets are up and whether the Riverbed metrics say what happened: one event accepted
by the gateway, one poison entry dead-lettered by the email consumer.

The exporter's test runs Debian's ``prometheus-redis-exporter`` (or the upstream
``redis_exporter`` binary) against a private primary and its replica, scraped under the
shipped job, and asks Prometheus for its series, including every query of the
dashboard's Redis panels that reads the exporter alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from riverbed import keys
from riverbed.testing import RedisServer, free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "riverbed.json"
API_KEY = "scrape-test-key-0123456789"
#: the Redis exporter: Debian's package names its binary prometheus-redis-exporter
EXPORTER = shutil.which("prometheus-redis-exporter") or shutil.which("redis_exporter")
EXPORTER_JOB = "riverbed-redis-exporter"
MAXMEMORY = 64 * 1024 * 1024  # bytes: the primary's limit, which the exporter must report
EXPORTER_SERIES = re.compile(r"(?<![A-Za-z0-9_])redis_[a-z0-9_]+")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="the prometheus server is not installed "
        "(Debian: apt-get install prometheus; .ci/run does)",
    ),
]


class Processes:
    """Processes this test starts; each is stopped (SIGTERM, then SIGKILL) at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        with open(self.directory / f"{name}.log", "ab") as log:  # the child keeps its copy
            self.started[name] = subprocess.Popen(
                args,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")[-3000:]

    def alive(self, name: str) -> bool:
        return self.started[name].poll() is None

    def stop_all(self) -> None:
        for process in self.started.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started.values():
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def scrape_config(targets: dict[str, list[int]]) -> dict[str, Any]:
    """The shipped prometheus.yml, scraping every second, its targets (ports) on loopback."""
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / rule) for rule in config["rule_files"]]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    config["scrape_configs"] = []
    for job_name, ports in targets.items():
        job = jobs[job_name]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{port}" for port in ports]}]
        config["scrape_configs"].append(job)
    return config


def start_prometheus(processes: Processes, config: dict[str, Any], directory: Path) -> int:
    """Debian's prometheus with ``config``, on a free loopback port (returned)."""
    port = free_port()
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    processes.start(
        "prometheus",
        [
            "prometheus",
            f"--config.file={path}",
            f"--storage.tsdb.path={directory / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        {},
    )
    return port


async def query(client: httpx.AsyncClient, promql: str) -> list[dict[str, Any]]:
    answer = (await client.get("/api/v1/query", params={"query": promql})).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


async def test_prometheus_scrapes_the_gateway_and_a_consumer(
    own_redis: RedisServer, processes: Processes, tmp_path: Path
) -> None:
    gateway_port, email_port = free_port(), free_port()
    common = {"REDIS_URL": own_redis.url, "PYTHONUNBUFFERED": "1"}
    processes.start(
        "gateway",
        [sys.executable, "-m", "riverbed_gateway"],
        {**common, "GATEWAY_PORT": str(gateway_port), "RIVERBED_API_KEY": API_KEY},
    )
    processes.start(
        "email",
        [sys.executable, "-m", "riverbed_email"],
        {
            **common,
            "EMAIL_PORT": str(email_port),
            "EMAIL_SMTP_HOST": "127.0.0.1",
            "EMAIL_SMTP_PORT": str(free_port()),  # nothing listens: nothing is sent here
            "EMAIL_SMTP_SECURITY": "none",
        },
    )
    prometheus_port = start_prometheus(
        processes,
        scrape_config({"riverbed-gateway": [gateway_port], "riverbed-email": [email_port]}),
        tmp_path,
    )
    config = tmp_path / "prometheus.yml"

    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway_port}") as gateway,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{email_port}") as email,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{prometheus_port}") as prometheus,
    ):

        async def ready(client: httpx.AsyncClient, name: str, path: str = "/readyz") -> bool:
            assert processes.alive(name), f"{name} exited:\n{processes.log(name)}"
            try:
                return (await client.get(path)).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(lambda: ready(gateway, "gateway"), 30, "the gateway to be ready")
        await wait_for(lambda: ready(email, "email"), 30, "the email service to be ready")
        await wait_for(lambda: ready(prometheus, "prometheus", "/-/ready"), 30, "Prometheus")

        # what the metrics must then show: one accepted event, one dead-lettered entry
        accepted = await gateway.post(
            "/v1/events",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={
                "type": "payment.succeeded.v1",
                "data": {
                    "provider": "stripe",
                    "provider_payment_id": "pi_scrape",
                    "amount": 1999,
                    "currency": "EUR",
                },
            },
        )
        assert accepted.status_code == 202, accepted.text
        client = redis.Redis.from_url(own_redis.url)
        try:
            client.xadd(keys.stream_key("email.requested"), {"junk": "not an event"})
        finally:
            client.close()

        async def targets_up() -> bool:
            answer = (await prometheus.get("/api/v1/targets")).json()["data"]["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in answer}
            return health == {"riverbed-gateway": "up", "riverbed-email": "up"}

        await wait_for(targets_up, 30, "both targets up in Prometheus")

        async def value_is(promql: str, expected: float) -> bool:
            result = await query(prometheus, promql)
            return len(result) == 1 and float(result[0]["value"][1]) == expected

        for promql in (
            'up{job="riverbed-gateway"}',
            'up{job="riverbed-email"}',
            'riverbed_gateway_accepted_events_total{type="payment.succeeded.v1"}',
            'riverbed_dead_letter_depth{job="riverbed-email", stream="email.requested"}',
            'riverbed_dead_lettered_total{job="riverbed-email", reason="undecodable"}',
        ):
            await wait_for(lambda q=promql: value_is(q, 1.0), 30, f"{promql} == 1")

        # the lag of a group that is keeping up is 0, and Prometheus has it from the service
        await wait_for(
            lambda: value_is(
                'riverbed_group_lag{job="riverbed-email", stream="email.requested", group="email"}',
                0.0,
            ),
            30,
            "the email group's lag sampled as 0",
        )

        # the shipped rules load and evaluate against real series without errors
        loaded = yaml.safe_load(config.read_text())
        shipped_rules = sum(
            len(group["rules"])
            for pattern in loaded["rule_files"]  # globs, as Prometheus reads them
            for rule_file in Path(pattern).parent.glob(Path(pattern).name)
            for group in yaml.safe_load(rule_file.read_text())["groups"]
        )

        async def rules_evaluated() -> bool:
            groups = (await prometheus.get("/api/v1/rules")).json()["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return len(rules) == shipped_rules and all(
                rule["health"] == "ok" and rule["lastEvaluation"] != "0001-01-01T00:00:00Z"
                for rule in rules
            )

        await wait_for(rules_evaluated, 30, "every rule evaluated, healthy")

        # and the dead-lettered entry has set off its alert (pending: it fires after 10 min)
        async def alert_pending() -> bool:
            alerts = await query(prometheus, 'ALERTS{alertname="RiverbedDeadLetterNotEmpty"}')
            return [(a["metric"]["alertstate"], a["metric"]["stream"]) for a in alerts] == [
                ("pending", "email.requested")
            ]

        await wait_for(alert_pending, 30, "RiverbedDeadLetterNotEmpty pending")


def exporter_queries() -> dict[str, str]:
    """The dashboard's queries that read the exporter's series alone, by panel and refId,
    with Grafana's rate window filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    return {
        f"{panel['title']} / {target['refId']}": target["expr"].replace("$__rate_interval", "30s")
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if EXPORTER_SERIES.search(target["expr"]) and "riverbed_" not in target["expr"]
    }


@pytest.fixture
def replica(own_redis: RedisServer) -> Iterator[RedisServer]:
    """A private redis-server replicating ``own_redis``, synced."""
    primary = redis.Redis.from_url(own_redis.url)
    directory = Path(tempfile.mkdtemp(prefix="rb-replica-"))
    server = RedisServer(directory)
    try:
        primary.config_set("repl-diskless-sync-delay", 0)  # s: sync at once, not after 5 s
        server.start()
        client = redis.Redis(port=server.port)
        try:
            client.replicaof("127.0.0.1", own_redis.port)
        finally:
            client.close()
        yield server
    finally:
        server.stop()
        primary.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.skipif(
    EXPORTER is None,
    reason="the Redis exporter is not installed "
    "(Debian: apt-get install prometheus-redis-exporter; .ci/run does)",
)
async def test_prometheus_scrapes_the_redis_exporter_of_a_primary_and_its_replica(
    own_redis: RedisServer, replica: RedisServer, processes: Processes, tmp_path: Path
) -> None:
    assert EXPORTER is not None
    primary_client = redis.Redis.from_url(own_redis.url)
    try:
        primary_client.config_set("maxmemory", MAXMEMORY)
    finally:
        primary_client.close()
    exporter_ports = {"primary": free_port(), "replica": free_port()}
    for node, server in (("primary", own_redis), ("replica", replica)):
        processes.start(
            f"exporter-{node}",
            [
                EXPORTER,
                f"-redis.addr=redis://127.0.0.1:{server.port}",
                f"-web.listen-address=127.0.0.1:{exporter_ports[node]}",
            ],
            {},
        )
    prometheus_port = start_prometheus(
        processes, scrape_config({EXPORTER_JOB: list(exporter_ports.values())}), tmp_path
    )
    primary = f"127.0.0.1:{exporter_ports['primary']}"
    replica_instance = f"127.0.0.1:{exporter_ports['replica']}"

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{prometheus_port}") as prometheus:

        async def prometheus_ready() -> bool:
            for name in ("prometheus", "exporter-primary", "exporter-replica"):
                assert processes.alive(name), f"{name} exited:\n{processes.log(name)}"
            try:
                return (await prometheus.get("/-/ready")).status_code == 200
            except httpx.TransportError:  # not listening yet
                return False

        await wait_for(prometheus_ready, 30, "Prometheus ready")

        async def value_is(promql: str, expected: float) -> bool:
            result = await query(prometheus, promql)
            return len(result) == 1 and float(result[0]["value"][1]) == expected

        # both targets scraped under the shipped job, each reaching its Redis
        for promql, expected in (
            (f'up{{job="{EXPORTER_JOB}", instance="{primary}"}}', 1.0),
            (f'up{{job="{EXPORTER_JOB}", instance="{replica_instance}"}}', 1.0),
            (f'redis_up{{instance="{primary}"}}', 1.0),
            (f'redis_up{{instance="{replica_instance}"}}', 1.0),
            # the primary's own INFO, not some other Redis: its maxmemory, its replica
            (f'redis_memory_max_bytes{{instance="{primary}"}}', float(MAXMEMORY)),
            (f'redis_connected_slaves{{instance="{primary}"}}', 1.0),
            (f'redis_instance_info{{instance="{replica_instance}", role="slave"}}', 1.0),
            (f'redis_master_link_up{{instance="{replica_instance}"}}', 1.0),
        ):
            await wait_for(
                lambda q=promql, v=expected: value_is(q, v), 30, f"{promql} == {expected}"
            )

        # every exporter query of the dashboard's Redis panels has series to show
        queries = exporter_queries()
        assert len(queries) >= 5, f"the dashboard reads few exporter series: {queries}"
        for where, promql in queries.items():

            async def answered(q: str = promql) -> bool:
                return bool(await query(prometheus, q))

            await wait_for(answered, 30, f"series for {where}: {promql}")
