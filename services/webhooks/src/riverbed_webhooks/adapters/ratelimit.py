"""Per-endpoint rate limit, shared by every replica: the runtime's GCRA limiter in Redis.

The limit is a promise to the receiver ("at most N requests a second"), so it is
kept in Redis rather than per process, one key per endpoint
(:func:`riverbed_webhooks.keys.webhook_rate_limit_key`). A burst of up to N requests is
allowed, then one every 1/N s.
"""

from __future__ import annotations

from riverbed.connection import Redis
from riverbed.ratelimit import RateLimiter
from riverbed_webhooks import keys


class RedisRateLimiter:
    """The ``RateLimiter`` port over :mod:`riverbed.ratelimit`."""

    def __init__(self, redis: Redis) -> None:
        # the rate is per endpoint, given on every call; these defaults are never used
        self._limiter = RateLimiter(redis, per_second=1, burst=1)

    async def acquire(self, endpoint_id: str, per_second: int) -> int:
        decision = await self._limiter.take(
            keys.webhook_rate_limit_key(endpoint_id), per_second=per_second, burst=per_second
        )
        return 0 if decision.allowed else max(decision.retry_after_ms, 1)
