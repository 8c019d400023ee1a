"""State shared by every email replica, in Redis (key names in :mod:`riverbed_email.keys`).

- :class:`RedisSuppressionList` — one hash, address -> why (no TTL: an operator removes);
- :class:`RedisSendLedger` — one record per accepted request (the sent marker) and one per
  request given up, each ``SET NX`` with a TTL; and the lease of the replica sending a
  request, taken and released by scripts that compare its holder's token (``lua/``);
- :class:`RedisDomainThrottle` — GCRA per recipient domain (:mod:`riverbed.ratelimit`),
  slowed down for a while by each throttling reply.

Each takes an open client (the service's lifespan opens and closes it).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Final

from riverbed.connection import Redis
from riverbed.ratelimit import RateLimiter
from riverbed.scripts import LuaScript
from riverbed_email import keys
from riverbed_email.domain.addresses import normalize
from riverbed_email.domain.records import FailedRecord, OutcomeRecord, SentRecord, Suppression


def _now_ms() -> int:
    return int(time.time() * 1000)


class RedisSuppressionList:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._key = keys.email_suppression_key()

    async def get(self, address: str) -> Suppression | None:
        raw = await self._redis.hget(self._key, normalize(address))
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
        return bool(await self._redis.hsetnx(self._key, address, value))

    async def remove(self, address: str) -> bool:
        return bool(await self._redis.hdel(self._key, normalize(address)))

    async def entries(self) -> AsyncIterator[Suppression]:
        async for field, raw in self._redis.hscan_iter(self._key, count=500):
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


#: the package of this service's Lua scripts
SCRIPTS: Final = "riverbed_email.adapters.lua"
#: take a request's sending lease unless another holder has it
HOLD_SCRIPT: Final = LuaScript.load(SCRIPTS, "send_lease_hold")
#: give a request's sending lease up if its holder still has it
RELEASE_SCRIPT: Final = LuaScript.load(SCRIPTS, "send_lease_release")


def _sent_json(record: SentRecord) -> str:
    return json.dumps(
        {"message_id": record.message_id, "attempts": record.attempts, "at_ms": record.at_ms}
    )


def _failed_json(record: FailedRecord) -> str:
    return json.dumps(
        {
            "kind": record.kind,
            "reason": record.reason,
            "permanent": record.permanent,
            "smtp_code": record.smtp_code,
            "attempts": record.attempts,
            "at_ms": record.at_ms,
        }
    )


class RedisSendLedger:
    def __init__(self, redis: Redis, *, ttl_s: int) -> None:
        self._redis = redis
        self.ttl_s = ttl_s

    async def hold(self, event_id: str, holder: str, lease_ms: int) -> int:
        key = keys.email_sending_key(event_id)
        return int(await HOLD_SCRIPT(self._redis, keys=[key], args=[holder, lease_ms]))

    async def release(self, event_id: str, holder: str) -> None:
        await RELEASE_SCRIPT(self._redis, keys=[keys.email_sending_key(event_id)], args=[holder])

    async def get(self, event_id: str) -> SentRecord | None:
        raw = await self._redis.get(keys.email_sent_key(event_id))
        if raw is None:
            return None
        data = json.loads(raw)
        return SentRecord(
            message_id=str(data["message_id"]),
            attempts=int(data.get("attempts", 1)),
            at_ms=int(data.get("at_ms", 0)),
        )

    async def record(self, event_id: str, record: SentRecord) -> bool:
        [stored] = await self.record_many([(event_id, record)])
        return stored

    async def record_many(self, records: Sequence[tuple[str, OutcomeRecord]]) -> list[bool]:
        # one round trip, not a transaction: the keys are per request (other slots in a
        # cluster), and each SET NX stands alone
        async with self._redis.pipeline(transaction=False) as pipe:
            for event_id, record in records:
                if isinstance(record, SentRecord):
                    pipe.set(
                        keys.email_sent_key(event_id), _sent_json(record), nx=True, ex=self.ttl_s
                    )
                else:
                    pipe.set(
                        keys.email_failed_key(event_id),
                        _failed_json(record),
                        nx=True,
                        ex=self.ttl_s,
                    )
            return [bool(stored) for stored in await pipe.execute()]

    async def failure(self, event_id: str) -> FailedRecord | None:
        raw = await self._redis.get(keys.email_failed_key(event_id))
        if raw is None:
            return None
        data = json.loads(raw)
        kind = data.get("kind")
        return FailedRecord(
            kind=kind if kind in ("rejected", "exhausted", "invalid") else "rejected",
            reason=str(data.get("reason") or "failed"),
            permanent=bool(data.get("permanent", True)),
            smtp_code=data.get("smtp_code"),
            attempts=int(data.get("attempts", 1)),
            at_ms=int(data.get("at_ms", 0)),
        )

    async def record_failure(self, event_id: str, record: FailedRecord) -> bool:
        [stored] = await self.record_many([(event_id, record)])
        return stored


class RedisDomainThrottle:
    """``per_second`` mails/s to one domain (bursts of ``burst``), halved per slow-down level."""

    def __init__(
        self,
        redis: Redis,
        *,
        per_second: float,
        burst: int,
        slowdown_window_s: int,
        max_level: int,
    ) -> None:
        self._redis = redis
        # the runtime's limiter still takes a callable (a client opened after wiring)
        self._limiter = RateLimiter(redis, per_second=per_second, burst=burst)
        self.per_second = per_second
        self.burst = burst
        self.slowdown_window_ms = slowdown_window_s * 1000
        self.max_level = max_level

    async def level(self, domain: str) -> int:
        raw = await self._redis.get(keys.email_domain_slowdown_key(domain))
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
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, self.slowdown_window_ms)
            level, _ = await pipe.execute()
        return min(int(level), self.max_level)
