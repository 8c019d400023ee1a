"""``Idempotency-Key`` as Stripe uses it: replay, conflict, or mismatch.

One record per (API key, idempotency key): first ``in_flight`` (held for a short
time, so a request that died does not block its retry forever), then ``done`` with
the response to replay for the rest of the window. A fingerprint of the request
(method, path, body) tells a true retry from a reuse of the key for something else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

from riverbed.problems import Problem

MAX_KEY_LENGTH: Final = 255


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


@dataclass(frozen=True)
class Replay:
    """The answer of a finished twin request, to give again."""

    status: int
    body: dict[str, Any]


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


def check_replay(record: dict[str, Any], request_fingerprint: str) -> Replay:
    """What a request finds under its key, held by an earlier request: the answer to replay;
    422 when the key was used for another request, 409 while that one is in flight."""
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
