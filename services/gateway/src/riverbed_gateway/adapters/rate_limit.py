"""Each API key's rate limit: the runtime's GCRA limiter in Redis, taken in leases."""

from __future__ import annotations

from riverbed.connection import Redis
from riverbed.ratelimit import Decision, LeasedRateLimiter, RateLimiter
from riverbed_gateway.keys import rate_limit_key
from riverbed_gateway.settings import GatewaySettings


class KeyRateLimit:
    """``GATEWAY_RATE_LIMIT_PER_S`` events/s per API key id, bursts of
    ``GATEWAY_RATE_LIMIT_BURST``."""

    def __init__(self, redis: Redis, settings: GatewaySettings) -> None:
        self._limiter = LeasedRateLimiter(
            RateLimiter(
                redis, per_second=settings.rate_limit_per_s, burst=settings.rate_limit_burst
            ),
            # a lease of 1/16 of the burst, at most one full batch: one Redis call per
            # lease, not per request (a lease smaller than a batch meant one per batch);
            # small limits (tests, tight keys) stay exact with leases of 1
            lease_size=min(settings.max_batch_events, settings.rate_limit_burst // 16),
        )

    async def take(self, key_id: str, events: int) -> Decision:
        return await self._limiter.take(rate_limit_key(key_id), events)
