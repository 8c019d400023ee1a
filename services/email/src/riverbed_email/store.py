"""State shared by every email replica, in Redis (key names in :mod:`riverbed.keys`).

- :class:`RedisSuppressionList` — one hash, address -> why (no TTL: an operator removes);
- :class:`RedisSendLedger` — one marker per accepted request, ``SET NX`` with a TTL;
- :class:`RedisDomainThrottle` — GCRA per recipient domain (:mod:`riverbed.ratelimit`),
  slowed down for a while by each throttling reply.

Each takes a callable returning the client, because the service opens Redis at start.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable

from riverbed import keys
from riverbed.connection import Redis
from riverbed.ratelimit import RateLimiter
from riverbed_email.addresses import normalize
from riverbed_email.ports import SentRecord, Suppression


def _now_ms() -> int:
    return int(time.time() * 1000)


class RedisSuppressionList:
    def __init__(self, redis: Callable[[], Redis]) -> None:
        self._redis = redis
        self._key = keys.email_suppression_key()

    async def get(self, address: str) -> Suppression | None:
        raw = await self._redis().hget(self._key, normalize(address))
        return None if raw is None else self._decode(normalize(address), raw)

    async def add(self, suppression: Suppression) -> bool:
        address = normalize(suppression.address)
        value = json.dumps(
            {
                "reason": suppression.reason,
                "smtp_code": suppression.smtp_code,
                "event_id": suppression.event_id,
                "at_ms": suppression.at_ms or _now_ms(),
            }
        )
        return bool(await self._redis().hsetnx(self._key, address, value))

    async def remove(self, address: str) -> bool:
        return bool(await self._redis().hdel(self._key, normalize(address)))

    async def entries(self) -> AsyncIterator[Suppression]:
        async for field, raw in self._redis().hscan_iter(self._key, count=500):
            address = field.decode() if isinstance(field, bytes) else str(field)
            yield self._decode(address, raw)

    @staticmethod
    def _decode(address: str, raw: bytes | str) -> Suppression:
        try:
            data = json.loads(raw)
            return Suppression(
                address=address,
                reason=str(data.get("reason") or "suppressed"),
                smtp_code=data.get("smtp_code"),
                event_id=data.get("event_id"),
                at_ms=int(data.get("at_ms") or 0),
            )
        except (ValueError, TypeError, AttributeError):
            # written by hand (redis-cli HSET … "bounced"): still a suppression
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            return Suppression(address=address, reason=text or "suppressed")


class RedisSendLedger:
    def __init__(self, redis: Callable[[], Redis], *, ttl_s: int) -> None:
        self._redis = redis
        self.ttl_s = ttl_s

    async def get(self, event_id: str) -> SentRecord | None:
        raw = await self._redis().get(keys.email_sent_key(event_id))
        if raw is None:
            return None
        data = json.loads(raw)
        return SentRecord(
            message_id=str(data["message_id"]),
            attempts=int(data.get("attempts", 1)),
            at_ms=int(data.get("at_ms", 0)),
        )

    async def record(self, event_id: str, record: SentRecord) -> bool:
        value = json.dumps(
            {"message_id": record.message_id, "attempts": record.attempts, "at_ms": record.at_ms}
        )
        stored = await self._redis().set(
            keys.email_sent_key(event_id), value, nx=True, ex=self.ttl_s
        )
        return bool(stored)


class RedisDomainThrottle:
    """``per_second`` mails/s to one domain (bursts of ``burst``), halved per slow-down level."""

    def __init__(
        self,
        redis: Callable[[], Redis],
        *,
        per_second: float,
        burst: int,
        slowdown_window_s: int,
        max_level: int,
    ) -> None:
        self._redis = redis
        self._limiter = RateLimiter(redis, per_second=per_second, burst=burst)
        self.per_second = per_second
        self.burst = burst
        self.slowdown_window_ms = slowdown_window_s * 1000
        self.max_level = max_level

    async def level(self, domain: str) -> int:
        raw = await self._redis().get(keys.email_domain_slowdown_key(domain))
        return min(int(raw), self.max_level) if raw is not None else 0

    async def take(self, domain: str) -> int:
        factor = 2 ** await self.level(domain)
        decision = await self._limiter.take(
            keys.email_domain_rate_key(domain),
            per_second=self.per_second / factor,
            burst=max(self.burst // factor, 1),
        )
        return 0 if decision.allowed else max(decision.retry_after_ms, 1)

    async def slow_down(self, domain: str) -> int:
        """One level slower for the window (each throttling reply extends the window)."""
        key = keys.email_domain_slowdown_key(domain)
        async with self._redis().pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, self.slowdown_window_ms)
            level, _ = await pipe.execute()
        return min(int(level), self.max_level)
