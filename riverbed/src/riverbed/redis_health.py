"""Every service watches its Redis: a PING probe and an INFO sample of each node, on an
interval, into the ``riverbed_redis_*`` metrics (:mod:`riverbed.metrics`), and what
``/readyz`` says about Redis.

Redis degrades silently: it goes on answering while it evicts keys, fails to write its
append-only file, loses its replica or stalls behind a slow command. Each of those shows
here, per node (every node of a Redis Cluster), and the alert rules of group
``riverbed-redis-health`` watch them (deploy/README.md, "Redis health").

A managed Redis may refuse some commands (``SLOWLOG``, ``LATENCY``, ``CONFIG``): what is
refused is logged once and not asked again; the rest is still sampled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from riverbed import eventloop, metrics
from riverbed.connection import Redis
from riverbed.settings import RedisHealthSettings

log = structlog.get_logger(__name__)

#: INFO field -> the gauge that mirrors it (numbers as Redis reports them)
_INFO_GAUGES = {
    "evicted_keys": metrics.REDIS_EVICTED_KEYS,
    "expired_keys": metrics.REDIS_EXPIRED_KEYS,
    "rejected_connections": metrics.REDIS_REJECTED_CONNECTIONS,
    "connected_clients": metrics.REDIS_CONNECTED_CLIENTS,
    "blocked_clients": metrics.REDIS_BLOCKED_CLIENTS,
    "mem_fragmentation_ratio": metrics.REDIS_FRAGMENTATION_RATIO,
    "used_memory": metrics.REDIS_NODE_USED_MEMORY,
    "maxmemory": metrics.REDIS_NODE_MAX_MEMORY,
    "aof_enabled": metrics.REDIS_AOF_ENABLED,
    "aof_delayed_fsync": metrics.REDIS_AOF_DELAYED_FSYNC,
    "connected_slaves": metrics.REDIS_CONNECTED_REPLICAS,
}
#: INFO status field ("ok" or "err") -> the gauge that says 1 for ok
_STATUS_GAUGES = {
    "aof_last_write_status": metrics.REDIS_AOF_LAST_WRITE_OK,
    "rdb_last_bgsave_status": metrics.REDIS_RDB_LAST_BGSAVE_OK,
}
#: every gauge labelled by node alone: what a node that left the cluster is removed from
_NODE_GAUGES = (
    *_INFO_GAUGES.values(),
    *_STATUS_GAUGES.values(),
    metrics.REDIS_UP,
    metrics.REDIS_IS_PRIMARY,
    metrics.REDIS_PRIMARY_LINK_UP,
    metrics.REDIS_SLOWLOG_LENGTH,
)


@dataclass(frozen=True)
class Node:
    """One Redis node as the client reaches it."""

    name: str  # host:port, or the socket path: the ``node`` label
    replica: bool  # a Cluster's replica: the service does not use it, readiness ignores it
    run: Callable[..., Awaitable[Any]]  # execute_command on this node only


def nodes_of(redis: Redis) -> list[Node]:
    """Every node ``redis`` reaches: all of a Cluster's (as the client knows them), or one."""
    if isinstance(redis, RedisCluster):
        return [
            Node(node.name, node.server_type == "replica", _on_node(redis, node))
            for node in redis.get_nodes()
        ]
    return [Node(node_name(redis), False, redis.execute_command)]


def _on_node(cluster: RedisCluster, node: Any) -> Callable[..., Awaitable[Any]]:
    async def run(*args: Any) -> Any:
        return await cluster.execute_command(*args, target_nodes=node)

    return run


def node_name(redis: Redis) -> str:
    """host:port (or the socket path) of a single Redis, as its pool connects to it."""
    pool = redis.connection_pool
    if getattr(pool, "service_name", None):  # a Sentinel's pool: the master moves
        return f"sentinel-master:{pool.service_name}"  # type: ignore[attr-defined]
    settings = pool.connection_kwargs
    if settings.get("path"):
        return str(settings["path"])
    return f"{settings.get('host', 'localhost')}:{settings.get('port', 6379)}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisHealth:
    """Probes and samples the nodes of a client every ``settings.probe_interval_s``."""

    def __init__(self, settings: RedisHealthSettings) -> None:
        self.settings = settings
        self.redis: Redis | None = None  # while run() runs
        # node -> (a replica?, why) of each node whose last probe failed
        self._failing: dict[str, tuple[bool, str]] = {}
        self._refused: set[str] = set()  # commands this Redis refuses: not asked again
        self._known: set[str] = set()  # nodes with series exported
        self._latency_events: dict[str, set[str]] = {}  # node -> events exported

    def run(self, redis: Redis) -> Coroutine[Any, Any, None]:
        """Watch ``redis``: readiness asks it from now on, and the coroutine returned
        probes and samples it every interval (at a fixed rate) until cancelled."""
        self.redis, self._failing = redis, {}
        return self._rounds(redis)

    async def _rounds(self, redis: Redis) -> None:
        loop = asyncio.get_running_loop()
        next_round = loop.time()
        try:
            while True:
                await self.probe_and_sample(redis)
                eventloop.raise_if_cancelled()
                next_round = max(next_round + self.settings.probe_interval_s, loop.time())
                await asyncio.sleep(next_round - loop.time())
        finally:
            self.redis = None

    async def probe_and_sample(self, redis: Redis) -> None:
        try:
            nodes = nodes_of(redis)
        except Exception as error:  # a Cluster client that never reached a node
            self._failing = {"cluster": (False, repr(error))}
            return
        await asyncio.gather(*(self._watch(node) for node in nodes))
        gone = self._known - {node.name for node in nodes}
        for name in gone:
            self._forget(name)

    async def _watch(self, node: Node) -> None:
        self._known.add(node.name)
        if not await self._probe(node):
            return
        try:
            await asyncio.wait_for(self._sample(node), timeout=self.settings.probe_interval_s)
        except Exception as error:
            log.warning("sampling Redis INFO failed", node=node.name, error=repr(error))

    async def _probe(self, node: Node) -> bool:
        """PING ``node``; True when it answered (even with an error: then INFO still says why)."""
        started = time.perf_counter()
        try:
            await asyncio.wait_for(node.run("PING"), timeout=self.settings.probe_timeout_s)
            failure = None
        except ResponseError as refused:  # an answer: MISCONF when its disk writes fail
            failure = f"PING refused: {refused}"
        except Exception as error:
            why = "no answer in time" if isinstance(error, TimeoutError) else repr(error)
            self._failed(node, why)
            metrics.REDIS_UP.labels(node.name).set(0)
            return False
        metrics.REDIS_PING_SECONDS.labels(node.name).observe(time.perf_counter() - started)
        metrics.REDIS_UP.labels(node.name).set(1)
        if failure is not None:
            self._failed(node, failure)
        elif self._failing.pop(node.name, None) is not None:
            log.info("Redis answers PING again", node=node.name)
        return True

    def _failed(self, node: Node, why: str) -> None:
        if node.name not in self._failing:
            log.warning("Redis health probe failed", node=node.name, error=why)
        self._failing[node.name] = (node.replica, why)

    async def _sample(self, node: Node) -> None:
        info: dict[str, Any] = await node.run("INFO")
        for field, gauge in _INFO_GAUGES.items():
            if field in info:
                gauge.labels(node.name).set(float(info[field]))
        for field, gauge in _STATUS_GAUGES.items():
            if field in info:
                gauge.labels(node.name).set(1.0 if _text(info[field]) == "ok" else 0.0)
        primary = _text(info.get("role", "master")) == "master"
        metrics.REDIS_IS_PRIMARY.labels(node.name).set(1.0 if primary else 0.0)
        if primary:
            with contextlib.suppress(KeyError):
                metrics.REDIS_PRIMARY_LINK_UP.remove(node.name)
        else:
            link_up = _text(info.get("master_link_status", "down")) == "up"
            metrics.REDIS_PRIMARY_LINK_UP.labels(node.name).set(1.0 if link_up else 0.0)
        slowlog = await self._unless_refused(node, "SLOWLOG LEN")
        if slowlog is not None:
            metrics.REDIS_SLOWLOG_LENGTH.labels(node.name).set(float(slowlog))
        latest = await self._unless_refused(node, "LATENCY LATEST")
        if latest is not None:
            self._set_latency_events(node.name, latest)

    async def _unless_refused(self, node: Node, command: str) -> Any:
        """The reply of ``command``, or None when Redis refuses it (logged the first time)."""
        if command in self._refused:
            return None
        try:
            return await node.run(command)
        except ResponseError as error:  # NOPERM, unknown (renamed) command: a managed Redis
            self._refused.add(command)
            log.warning(
                "Redis refuses a health command; its figures are left out",
                command=command,
                error=str(error),
            )
            return None

    def _set_latency_events(self, node: str, latest: list[Any]) -> None:
        seen: set[str] = set()
        for event, at, latest_ms, *_ in latest:  # [event, unix s, latest ms, max ms]
            name = _text(event)
            seen.add(name)
            metrics.REDIS_LATENCY_LATEST.labels(node, name).set(int(latest_ms) / 1000)
            metrics.REDIS_LATENCY_LATEST_TIME.labels(node, name).set(int(at))
        for name in self._latency_events.get(node, set()) - seen:  # LATENCY RESET since
            self._remove_latency_event(node, name)
        self._latency_events[node] = seen

    def _remove_latency_event(self, node: str, event: str) -> None:
        for gauge in (metrics.REDIS_LATENCY_LATEST, metrics.REDIS_LATENCY_LATEST_TIME):
            with contextlib.suppress(KeyError):
                gauge.remove(node, event)

    def _forget(self, node: str) -> None:
        """Remove the series of a node the client no longer reaches (left the cluster)."""
        for gauge in _NODE_GAUGES:
            with contextlib.suppress(KeyError):
                gauge.remove(node)
        with contextlib.suppress(KeyError):
            metrics.REDIS_PING_SECONDS.remove(node)
        for event in self._latency_events.pop(node, set()):
            self._remove_latency_event(node, event)
        self._known.discard(node)
        self._failing.pop(node, None)

    async def ready(self) -> tuple[bool, str]:
        """``/readyz``'s Redis check: not ready at once when the last probe failed (no
        wait for a Redis known to be down), else a PING bounded by the probe timeout."""
        if self.redis is None:
            return False, "not connected"
        down = {n: why for n, (replica, why) in self._failing.items() if not replica}
        if down:
            listed = "; ".join(f"{node}: {why}" for node, why in sorted(down.items()))
            return False, f"failed at the last probe ({listed})"
        await asyncio.wait_for(self.redis.ping(), timeout=self.settings.probe_timeout_s)
        return True, "PING ok"
