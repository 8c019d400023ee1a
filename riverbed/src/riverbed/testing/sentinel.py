"""A primary, its replica and three Sentinels watching them: private ``redis-server``
processes a test (or a benchmark) starts and owns, for failover tests.

Sentinels are ``redis-server <conf> --sentinel``, so the ``redis-server`` binary alone is
enough (no ``redis-sentinel`` package). Their timings are short, so that a failover takes
about a second or two instead of the production defaults' half a minute.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from riverbed.testing.servers import NO_REDIS_HELP, RedisServer, free_port, stop_process

#: the master's name in the Sentinels' configuration (REDIS_SENTINEL_MASTER)
MASTER_NAME = "riverbed"


@dataclass
class SentinelProcess:
    """One Sentinel: ``redis-server sentinel.conf --sentinel`` (it rewrites its file)."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self, master_port: int, *, down_after_ms: int, failover_timeout_ms: int) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(NO_REDIS_HELP)
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.directory}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        with open(self.directory / "sentinel.log", "ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our args
                [binary, str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


@dataclass
class LocalSentinelSet:
    """A primary, one replica of it and three Sentinels (quorum 2), on loopback ports."""

    directory: Path
    #: ms without an answer before a Sentinel deems the master down (production: 30 000);
    #: long enough that a Sentinel on a loaded machine does not find the freshly promoted
    #: master "down" and fail over once more, to the empty restarted primary (seen at 1 000)
    down_after_ms: int = 3_000
    #: ms a failover may take before another Sentinel tries again (production: 180 000)
    failover_timeout_ms: int = 5_000
    primary: RedisServer = field(init=False)
    replica: RedisServer = field(init=False)
    sentinels: list[SentinelProcess] = field(init=False)

    def __post_init__(self) -> None:
        self.primary = RedisServer(self._dir("primary"))
        self.replica = RedisServer(self._dir("replica"))
        self.sentinels = [SentinelProcess(self._dir(f"sentinel-{n}")) for n in range(3)]

    def _dir(self, name: str) -> Path:
        path = self.directory / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def addresses(self) -> str:
        """The Sentinels as REDIS_SENTINELS wants them: ``host:port,host:port,...``."""
        return ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)

    def environment(self) -> dict[str, str]:
        """The variables that connect a service through these Sentinels."""
        return {
            "REDIS_SENTINELS": self.addresses,
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
            # the host and port here are never used: the Sentinels name the master
            "REDIS_URL": "redis://127.0.0.1:1/0",
        }

    def start(self, timeout_s: float = 20.0) -> None:
        self.primary.start()
        self.replica.extra_config["replicaof"] = f"127.0.0.1 {self.primary.port}"
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start(
                self.primary.port,
                down_after_ms=self.down_after_ms,
                failover_timeout_ms=self.failover_timeout_ms,
            )
        self._wait(self._settled, timeout_s, "the replica in sync and every Sentinel seeing it")

    def _settled(self) -> bool:
        """The replica's link is up and every Sentinel knows the replica and its peers: a
        failover can happen."""
        replica = redis.Redis(port=self.replica.port, socket_timeout=1)
        try:
            if replica.info("replication").get("master_link_status") != "up":
                return False
        finally:
            replica.close()
        for sentinel in self.sentinels:
            client = redis.Redis(port=sentinel.port, socket_timeout=1)
            try:
                state: Any = client.sentinel_master(MASTER_NAME)
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                    return False
            except redis.RedisError:
                return False
            finally:
                client.close()
        return True

    def master_port(self) -> int | None:
        """The port of the master as a Sentinel sees it, when it deems that master up (as
        redis-py's Sentinel client requires before it connects), else None."""
        for sentinel in self.sentinels:
            client = redis.Redis(port=sentinel.port, socket_timeout=1)
            try:
                state: Any = client.sentinel_master(MASTER_NAME)
            except redis.RedisError:
                continue
            finally:
                client.close()
            flags = set(str(state["flags"]).split(","))
            if "master" in flags and not flags & {"s_down", "o_down"}:
                return int(state["port"])
        return None

    def kill_primary(self) -> None:
        """kill -9 the primary: no shutdown, no last save, connections cut."""
        process = self.primary.process
        if process is not None:
            process.kill()
            process.wait()
        self.primary.process = None

    def wait_for_promotion(self, timeout_s: float = 30.0) -> None:
        """Until the Sentinels name the replica as the master, and it says it is one."""

        def promoted() -> bool:
            if self.master_port() != self.replica.port:
                return False
            client = redis.Redis(port=self.replica.port, socket_timeout=1)
            try:
                return client.info("replication").get("role") == "master"
            finally:
                client.close()

        self._wait(promoted, timeout_s, f"Sentinel promoting the replica (:{self.replica.port})")

    def restart_old_primary(self, timeout_s: float = 30.0) -> None:
        """Start the killed primary again, empty, as an operator (or Kubernetes) would; the
        Sentinels make it a replica of the promoted one: the pair is whole again."""
        self.primary.start()

        def rejoined() -> bool:
            client = redis.Redis(port=self.primary.port, socket_timeout=1)
            try:
                info = client.info("replication")
            finally:
                client.close()
            return bool(
                info.get("role") == "slave"
                and info.get("master_port") == self.replica.port
                and info.get("master_link_status") == "up"
            )

        self._wait(rejoined, timeout_s, "the old primary back as a replica of the new one")

    def _wait(self, condition: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                logs = [
                    (s.directory / "sentinel.log").read_text(errors="replace")[-1500:]
                    for s in self.sentinels
                ]
                raise TimeoutError(f"no {what} within {timeout_s} s; sentinel 0's log:\n{logs[0]}")
            time.sleep(0.05)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        self.replica.stop()
        self.primary.stop()
