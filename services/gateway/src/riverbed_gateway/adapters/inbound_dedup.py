"""The dedup markers of providers' webhook events in Redis.

A marker per (provider, provider event id) is claimed with SET-if-absent before publishing:
first "in flight" for ``GATEWAY_IN_FLIGHT_TTL_S``, then "published" for
``GATEWAY_IDEMPOTENCY_TTL_S``. When publishing fails the marker is deleted (only if this
delivery still holds it) so that the provider's retry can succeed; a marker whose holder
crashed expires after the in-flight hold.
"""

from __future__ import annotations

import json
import uuid
from typing import Final

from riverbed.connection import Redis
from riverbed.scripts import LuaScript
from riverbed_gateway import keys
from riverbed_gateway.adapters.idempotency_store import CLAIM
from riverbed_gateway.service_layer.ports import DedupClaim

_RELEASE: Final = LuaScript.load("riverbed_gateway.adapters.lua", "release")


class RedisInboundDedup:
    def __init__(self, redis: Redis, *, window_s: int, in_flight_s: int) -> None:
        """``window_s``: how long a published event is remembered; ``in_flight_s``: how long
        a delivery holds its marker before it counts as dead."""
        self._redis = redis
        self.window_s = window_s
        self.in_flight_ms = in_flight_s * 1000

    async def claim(self, provider: str, provider_event_id: str) -> DedupClaim:
        marker = keys.inbound_event_key(provider, provider_event_id)
        in_flight = json.dumps({"state": "in_flight", "token": uuid.uuid4().hex})
        existing = await CLAIM(self._redis, keys=[marker], args=[in_flight, self.in_flight_ms])
        if existing is None:
            return DedupClaim(marker, in_flight, "us")
        state = json.loads(existing)["state"]
        return DedupClaim(marker, in_flight, "in_flight" if state == "in_flight" else "published")

    async def release(self, claim: DedupClaim) -> None:
        await _RELEASE(self._redis, keys=[claim.marker], args=[claim.record])

    async def published(self, claim: DedupClaim, event_id: str, entry_id: str) -> None:
        published = json.dumps({"state": "published", "id": event_id, "entry_id": entry_id})
        await self._redis.set(claim.marker, published, ex=self.window_s)
