"""Rate limits per API key, shared by every gateway replica: GCRA, atomic in Redis.

GCRA keeps one number per key (the theoretical arrival time), allows ``burst`` events
at once and refills at ``rate`` events/s; a batch costs one unit per event. Time comes
from Redis (``TIME``), so replicas with skewed clocks agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from riverbed import keys
from riverbed.connection import Redis
from riverbed.scripts import LuaScript

#: KEYS: state. ARGV: interval (µs per event), burst (events), cost (events).
#: Returns {allowed 0/1, remaining events, retry after (µs), full again after (µs)}.
GCRA: Final = """
local interval, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allowed_from = new_tat - burst * interval
if allowed_from > now then
  local remaining = math.floor((now - (tat - burst * interval)) / interval)
  return {0, math.max(remaining, 0), allowed_from - now, tat - now}
end
local hold_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', hold_ms)
return {1, math.floor((now - allowed_from) / interval), 0, new_tat - now}
"""
_GCRA = LuaScript(GCRA)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int  # events allowed at once (the burst)
    remaining: int  # events allowed right now after this request
    retry_after_s: int  # when refused: seconds until this request would fit
    reset_s: int  # seconds until the full burst is available again

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(self.retry_after_s, 1))
        return headers


class RateLimiter:
    def __init__(self, redis: Callable[[], Redis], *, per_second: float, burst: int) -> None:
        self._redis = redis
        self.burst = burst
        self._interval_us = 1_000_000 / per_second

    async def take(self, api_key_name: str, cost: int) -> Decision:
        allowed, remaining, retry_us, reset_us = await _GCRA(
            self._redis(),
            keys=[keys.rate_limit_key(api_key_name)],
            args=[self._interval_us, self.burst, cost],
        )
        return Decision(
            allowed=bool(allowed),
            limit=self.burst,
            remaining=int(remaining),
            retry_after_s=math.ceil(int(retry_us) / 1_000_000),
            reset_s=math.ceil(int(reset_us) / 1_000_000),
        )
