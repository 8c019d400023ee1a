"""Per-endpoint cap on requests in flight, in this process.

Per replica on purpose: it protects the receiver from one process opening
hundreds of connections to it and keeps one slow endpoint from holding every
handler slot. The cluster-wide bound is replicas x cap; the rate limit (in
Redis) is the cluster-wide promise.
"""

from __future__ import annotations


class LocalConcurrencyGate:
    """:class:`~riverbed_webhooks.service_layer.ports.ConcurrencyGate` in memory."""

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}

    def try_acquire(self, endpoint_id: str, cap: int) -> bool:
        current = self._in_flight.get(endpoint_id, 0)
        if current >= cap:
            return False
        self._in_flight[endpoint_id] = current + 1
        return True

    def release(self, endpoint_id: str) -> None:
        current = self._in_flight.get(endpoint_id, 0) - 1
        if current <= 0:
            self._in_flight.pop(endpoint_id, None)
        else:
            self._in_flight[endpoint_id] = current

    def in_flight(self, endpoint_id: str) -> int:
        return self._in_flight.get(endpoint_id, 0)
