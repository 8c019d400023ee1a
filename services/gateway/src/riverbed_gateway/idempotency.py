"""``Idempotency-Key`` as Stripe uses it: replay, conflict, or mismatch.

One record per (API key, idempotency key): first ``in_flight`` (held for a short
time, so a request that died does not block its retry forever), then ``done`` with
the response to replay for the rest of the window. A fingerprint of the request
(method, path, body) tells a true retry from a reuse of the key for something else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from riverbed.connection import Redis
from riverbed.scripts import LuaScript
from riverbed_gateway import keys
from riverbed_gateway.problems import Problem

MAX_KEY_LENGTH: Final = 255

#: Claim the key or return what holds it. KEYS: record. ARGV: in-flight record, hold (ms).
#: Returns nil when claimed, else the existing record.
_CLAIM = LuaScript("""
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
""")


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


@dataclass(frozen=True)
class Replay:
    status: int
    body: dict[str, Any]


class IdempotencyStore:
    def __init__(self, redis: Callable[[], Redis], *, window_s: int, in_flight_s: int) -> None:
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
        existing = await _CLAIM(
            self._redis(), keys=[record_key], args=[in_flight, self.in_flight_ms]
        )
        if existing is None:
            return None
        record = json.loads(existing)
        if record["fingerprint"] != request_fingerprint:
            raise Problem(
                422,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                "this Idempotency-Key was already used with a different request; "
                "use a new key for a new request",
            )
        if record["state"] == "in_flight":
            raise Problem(
                409,
                "idempotency-key-in-flight",
                "Request in progress",
                "a request with this Idempotency-Key is still being processed; retry later",
                headers={"Retry-After": "1"},
            )
        return Replay(int(record["status"]), record["body"])

    async def complete(
        self, owner: str, key: str, request_fingerprint: str, status: int, body: dict[str, Any]
    ) -> None:
        record = {
            "state": "done",
            "fingerprint": request_fingerprint,
            "status": status,
            "body": body,
        }
        await self._redis().set(
            keys.request_idempotency_key(owner, key), json.dumps(record), ex=self.window_s
        )

    async def release(self, owner: str, key: str) -> None:
        """Give the key back: the request was refused before anything was published."""
        await self._redis().delete(keys.request_idempotency_key(owner, key))


def validate_key(key: str) -> str:
    # printable ASCII, as the OpenAPI document says: headers arrive as latin-1, where
    # isprintable() alone would also take accented letters some clients cannot send
    if not key or len(key) > MAX_KEY_LENGTH or not (key.isascii() and key.isprintable()):
        raise Problem(
            400,
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
        )
    return key
