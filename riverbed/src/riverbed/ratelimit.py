"""Rate limits shared by every replica: GCRA, atomic in Redis, one key per limited thing.

GCRA (the generic cell rate algorithm) keeps one number per key, the theoretical
arrival time (TAT): it allows ``burst`` events at once and refills at ``per_second``
events/s; a request may cost several events. Time comes from Redis (``TIME``), so
replicas with skewed clocks agree. The key is named by its owner (the gateway's per API
key, email's per recipient domain…, each in its service's ``keys`` module); it expires once
the bucket is full again, so idle keys cost nothing.

The rate may differ from one call to the next (a limiter slowing down a peer that
asked for it): the stored TAT is absolute time, so a slower interval simply makes
each event take more of it.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Final

from riverbed.connection import Redis
from riverbed.scripts import RUNTIME_SCRIPTS, LuaScript

#: the GCRA step: take ``cost`` events if they fit (KEYS, ARGV: its file in riverbed/lua/)
GCRA: Final = LuaScript.load(RUNTIME_SCRIPTS, "ratelimit_gcra")


@dataclass(frozen=True)
class Decision:
    """What one :meth:`RateLimiter.take` decided."""

    allowed: bool
    limit: int  # events allowed at once (the burst)
    remaining: int  # events allowed right now, after this request when it was allowed
    retry_after_ms: int  # when refused: ms until this request would fit; 0 when allowed
    reset_ms: int  # ms until the full burst is available again

    @property
    def retry_after_s(self) -> int:
        """Whole seconds to wait (rounded up), as ``Retry-After`` wants them."""
        return math.ceil(self.retry_after_ms / 1000)

    @property
    def reset_s(self) -> int:
        return math.ceil(self.reset_ms / 1000)

    def headers(self) -> dict[str, str]:
        """The IETF ``RateLimit-*`` fields (and ``Retry-After`` when refused)."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(self.retry_after_s, 1))
        return headers


class RateLimiter:
    """``per_second`` events/s with bursts of ``burst``, per key, shared through Redis
    (``redis``: an open client, as a service's lifespan has it)."""

    def __init__(self, redis: Redis, *, per_second: float, burst: int) -> None:
        if per_second <= 0:
            raise ValueError(f"per_second must be > 0, got {per_second}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self._redis = redis
        self.per_second = per_second
        self.burst = burst

    async def take(
        self,
        key: str,
        cost: int = 1,
        *,
        per_second: float | None = None,
        burst: int | None = None,
    ) -> Decision:
        """Take ``cost`` events from ``key``'s budget, or learn how long to wait.

        ``per_second`` and ``burst`` override the limiter's for this call (a slowed-down
        peer); a refused request takes nothing.
        """
        rate = per_second if per_second is not None else self.per_second
        size = burst if burst is not None else self.burst
        if rate <= 0:
            raise ValueError(f"per_second must be > 0, got {rate}")
        interval_us = 1_000_000 / rate
        allowed, remaining, retry_us, reset_us = await GCRA(
            self._redis, keys=[key], args=[interval_us, size, cost]
        )
        return Decision(
            allowed=bool(allowed),
            limit=size,
            remaining=int(remaining),
            retry_after_ms=math.ceil(int(retry_us) / 1000),
            reset_ms=math.ceil(int(reset_us) / 1000),
        )


class LeasedRateLimiter:
    """A :class:`RateLimiter` that takes tokens from Redis in leases and spends them locally.

    One Redis call per ``lease_size`` events instead of one per request. The limit stays
    shared and is never exceeded: leased tokens were taken from the shared budget, and
    those a replica has not spent within ``lease_s`` are simply dropped (a replica can
    only ever be stricter than the shared limit, by at most one lease).
    """

    def __init__(self, shared: RateLimiter, *, lease_size: int, lease_s: float = 1.0) -> None:
        self.shared = shared
        self.lease_size = max(1, lease_size)
        self.lease_s = lease_s
        self._leases: dict[str, tuple[int, float, Decision]] = {}  # key -> (tokens, until, last)
        #: key -> done when the lease being taken from Redis has come back: concurrent
        #: requests wait for it rather than each take a lease (and all but one be dropped)
        self._taking: dict[str, asyncio.Future[None]] = {}

    async def take(self, key: str, cost: int = 1) -> Decision:
        spent = self._spend(key, cost)
        if spent is not None:
            return spent
        taking = self._taking.get(key)
        if taking is not None and self.lease_size > cost:  # what it brings back may pay
            await asyncio.shield(taking)
            spent = self._spend(key, cost)
            # the lease did not come, or is spent already: ask Redis, as before
            return spent if spent is not None else await self._take_shared(key, cost)
        taken = asyncio.get_running_loop().create_future()
        self._taking[key] = taken
        try:
            return await self._take_shared(key, cost)
        finally:
            del self._taking[key]
            taken.set_result(None)

    def _spend(self, key: str, cost: int) -> Decision | None:
        """The decision from this replica's lease of ``key``; None when it cannot pay."""
        tokens, until, last = self._leases.get(key, (0, 0.0, None))
        if tokens < cost or until <= time.monotonic() or last is None:
            return None
        tokens -= cost
        self._leases[key] = (tokens, until, last)
        return Decision(True, last.limit, max(last.remaining - cost, 0), 0, last.reset_ms)

    async def _take_shared(self, key: str, cost: int) -> Decision:
        now = time.monotonic()
        want = max(cost, self.lease_size)
        decision = await self.shared.take(key, want)
        if not decision.allowed and want > cost:
            decision = await self.shared.take(key, cost)  # the lease did not fit; the request may
            want = cost
        if decision.allowed:
            self._leases[key] = (want - cost, now + self.lease_s, decision)
        if len(self._leases) > 10_000:  # bounded: one entry per active key
            self._leases.clear()
        return decision
