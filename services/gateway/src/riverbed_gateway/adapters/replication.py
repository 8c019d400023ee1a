"""Appends that replicas have acknowledged before the gateway answers 202
(``GATEWAY_MIN_REPLICAS``): Redis ``WAIT`` on the very connection that appended.

``WAIT n timeout`` blocks until ``n`` replicas have acknowledged every write made on *its
own connection* so far, so the appends and the ``WAIT`` share one pinned connection for
the request. Should that connection have been re-established midway (a reconnect after a
failover), the ``WAIT`` would vouch for nothing the request wrote: that counts as not
replicated too. Refused as a problem (503, ``Retry-After``) whose detail says the events
may still be delivered: the client retries with the same ``Idempotency-Key`` (or event
ids), and consumers handle an event id once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from riverbed.connection import Redis
from riverbed.problems import Problem
from riverbed.settings import RedisSettings
from riverbed_gateway.settings import GatewaySettings


class ReplicationUnsupported(ValueError):
    """``GATEWAY_MIN_REPLICAS`` on a Redis the gateway cannot ``WAIT`` on (a Cluster)."""


def replication_of(settings: GatewaySettings, redis: RedisSettings) -> Replication | None:
    """What ``GATEWAY_MIN_REPLICAS`` asks for, or None when it is 0 (off)."""
    if settings.min_replicas == 0:
        return None
    if redis.cluster:
        raise ReplicationUnsupported(
            "GATEWAY_MIN_REPLICAS is not supported with REDIS_CLUSTER (a request's streams "
            "may live on several primaries, each with its own replicas); set it to 0"
        )
    return Replication(
        settings.min_replicas, settings.replication_timeout_ms, settings.retry_after_s
    )


@dataclass(frozen=True, slots=True)
class Replication:
    """``min_replicas`` must acknowledge within ``timeout_ms`` (ms)."""

    min_replicas: int
    timeout_ms: int
    retry_after_s: int

    @asynccontextmanager
    async def pinned(self, redis: Redis) -> AsyncIterator[Redis]:
        """A client on one connection of ``redis``'s pool for the block's writes; at a clean
        exit, ``WAIT`` on it, and a 503 problem when too few replicas acknowledged."""
        client = redis.client()  # the pool's connection, held until aclose
        watch = _Reconnects()
        try:
            await client.initialize()  # takes the connection (and connects it) now
            connection = client.connection
            assert connection is not None, "a single-connection client holds one once initialized"
            connection.register_connect_callback(watch.saw)  # type: ignore[no-untyped-call]
            try:
                yield client
                acknowledged = await client.wait(self.min_replicas, self.timeout_ms)
            finally:
                connection.deregister_connect_callback(watch.saw)  # type: ignore[no-untyped-call]
        finally:
            await client.aclose()
        if watch.count or acknowledged < self.min_replicas:
            raise self._refusal(0 if watch.count else acknowledged)

    def _refusal(self, acknowledged: int) -> Problem:
        return Problem(
            503,
            "not-replicated",
            "Not replicated in time",
            f"{acknowledged} of the {self.min_replicas} Redis replicas required "
            f"(GATEWAY_MIN_REPLICAS) acknowledged within {self.timeout_ms} ms; the events "
            "were appended to the primary and may still be delivered: retry with the same "
            "Idempotency-Key (or the same event ids), which are delivered once",
            headers={"Retry-After": str(self.retry_after_s)},
        )


class _Reconnects:
    """Counts connects of the pinned connection after the first (a bound method: redis-py
    keeps its connect callbacks as weak references)."""

    def __init__(self) -> None:
        self.count = 0

    async def saw(self, _connection: Any) -> None:
        self.count += 1
