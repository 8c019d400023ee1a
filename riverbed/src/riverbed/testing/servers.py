"""Redis servers a test session starts and owns, and clients of the test Redis.

Plain classes and functions, no pytest: benchmarks and local scripts start the same
throwaway ``redis-server`` (and the local Redis Cluster) that the test plugin
(:mod:`riverbed.testing.plugin`) provides to tests.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

from riverbed.settings import RedisSettings

NO_REDIS_HELP = (
    "no Redis for the integration tests: set REDIS_URL=redis://host:port/db, or install "
    "redis-server (Debian/Ubuntu: 'apt-get install redis-server'; macOS: 'brew install redis'), "
    "or start a Docker daemon so testcontainers can run one"
)


def free_port() -> int:
    """A loopback TCP port free right now (the OS picks it), for a server a test starts."""
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
    #: run in the child before redis-server starts, e.g. to set a resource limit
    preexec: Callable[[], None] | None = None
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
            self.process = subprocess.Popen(  # noqa: S603 - our args
                args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=self.preexec
            )
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
        stop_process(self.process)
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


def docker_redis_url() -> tuple[str, object] | None:
    """URL and container of a Redis run by testcontainers, or None where Docker cannot."""
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


def sync_redis_client(redis_url: str) -> redis.Redis:
    """A blocking client of the test Redis for fixtures and checks outside the event loop:
    of a Redis Cluster when ``REDIS_CLUSTER=true``, as the services would connect."""
    if RedisSettings(url=redis_url).cluster:
        return cast(redis.Redis, redis.RedisCluster.from_url(redis_url))
    return redis.Redis.from_url(redis_url)


def redis_cli_args(redis_url: str) -> list[str]:
    """``redis-cli`` arguments that reach the test Redis (``-c`` follows a cluster's MOVED)."""
    return ["-u", redis_url, *(["-c"] if RedisSettings(url=redis_url).cluster else [])]


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM ``process`` and wait up to 10 s for it, then SIGKILL; None or an ended
    process is left as it is."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
