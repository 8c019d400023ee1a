"""Idempotency records in Redis (the rules: :mod:`..domain.idempotency`): claimed with one
script, completed with the answer to replay for the window, released when a request was
refused before anything was published."""

from __future__ import annotations

import json
from typing import Any, Final

from riverbed.connection import Redis
from riverbed.scripts import LuaScript
from riverbed_gateway import keys
from riverbed_gateway.domain.idempotency import Replay, check_replay

CLAIM: Final = LuaScript.load("riverbed_gateway.adapters.lua", "claim")


class IdempotencyStore:
    def __init__(self, redis: Redis, *, window_s: int, in_flight_s: int) -> None:
        """``window_s``: how long an answer is replayed; ``in_flight_s``: how long a request
        holds its key before it counts as dead."""
        self._redis = redis
        self.window_s = window_s
        self.in_flight_ms = in_flight_s * 1000

    async def claim(self, owner: str, key: str, request_fingerprint: str) -> Replay | None:
        """Claim ``key`` for this request; a finished twin's response to replay, or None.

        Raises 409 while a twin is in flight and 422 when the key was used for another
        request.
        """
        record_key = keys.request_idempotency_key(owner, key)
        in_flight = json.dumps({"state": "in_flight", "fingerprint": request_fingerprint})
        existing = await CLAIM(self._redis, keys=[record_key], args=[in_flight, self.in_flight_ms])
        if existing is None:
            return None
        return check_replay(json.loads(existing), request_fingerprint)

    async def complete(
        self, owner: str, key: str, request_fingerprint: str, status: int, body: dict[str, Any]
    ) -> None:
        record = {
            "state": "done",
            "fingerprint": request_fingerprint,
            "status": status,
            "body": body,
        }
        await self._redis.set(
            keys.request_idempotency_key(owner, key), json.dumps(record), ex=self.window_s
        )

    async def release(self, owner: str, key: str) -> None:
        """Give the key back: the request was refused before anything was published."""
        await self._redis.delete(keys.request_idempotency_key(owner, key))
