"""Providers' webhook signatures (Stripe's scheme), verified without I/O.

``Stripe-Signature: t=<unix s>,v1=<hex>[,v1=<hex>…]``, where each ``v1`` is HMAC-SHA256 of
``b"<t>." + raw body`` under one of the provider's secrets. Any ``v1`` matching any
configured secret passes, so a secret can be rotated without downtime (the provider signs
with old and new, the gateway holds old and new). Other schemes in the header (Stripe's
test-mode ``v0``) are ignored. ``t`` must be within the tolerance
(``GATEWAY_INBOUND_TOLERANCE_S``, 300 s) of the gateway's clock, either way.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import Final

from riverbed.problems import Problem

SIGNATURE_HEADER: Final = "Stripe-Signature"

_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # unix s; ASCII digits only (int() takes any digit)
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _bad_signature(reason: str, title: str, detail: str) -> Problem:
    return Problem(400, reason, title, detail)


def _malformed(detail: str) -> Problem:
    return _bad_signature(
        "signature-malformed",
        "Malformed signature header",
        f"{SIGNATURE_HEADER} {detail}; expected 't=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=…]'",
    )


def parse_signature_header(header: str) -> tuple[str, list[str]]:
    """The timestamp (as sent: it is part of the signed bytes) and the ``v1`` signatures."""
    timestamp: str | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise _malformed(f"has an element without '=': {item.strip()[:20]!r}")
        if name == "t":
            if timestamp is not None:
                raise _malformed("has more than one 't'")
            if not _TIMESTAMP.fullmatch(value):
                raise _malformed("has a 't' that is not a unix time in seconds")
            timestamp = value
        elif name == "v1":
            if not _HEX_SHA256.fullmatch(value):
                raise _malformed("has a 'v1' that is not 64 hex digits")
            signatures.append(value.lower())
    if timestamp is None:
        raise _malformed("has no 't'")
    if not signatures:
        raise _malformed("has no 'v1' signature")
    return timestamp, signatures


def verify_signature(
    header: str | None,
    body: bytes,
    secrets: Sequence[bytes],
    *,
    now: float,
    tolerance_s: int,
) -> None:
    """Raise a 400 problem unless a ``v1`` of ``header`` signs ``body`` under a secret."""
    if not header:
        raise _bad_signature(
            "signature-missing",
            "Missing signature",
            f"the {SIGNATURE_HEADER} header is required: it authenticates the provider",
        )
    timestamp, signatures = parse_signature_header(header)
    signed = timestamp.encode() + b"." + body
    expected = [hmac.new(secret, signed, hashlib.sha256).hexdigest().encode() for secret in secrets]
    # every pair is compared (no early exit): the time taken says nothing about which matched
    matches = [hmac.compare_digest(e, s.encode()) for e in expected for s in signatures]
    if not any(matches):
        raise _bad_signature(
            "signature-mismatch",
            "Invalid signature",
            f"no {SIGNATURE_HEADER} v1 signature matches the body under this provider's secrets",
        )
    skew = now - int(timestamp)
    if abs(skew) > tolerance_s:
        raise _bad_signature(
            "signature-stale",
            "Stale signature",
            f"the signature timestamp is {abs(skew):.0f} s in the "
            f"{'past' if skew > 0 else 'future'}; at most {tolerance_s} s is tolerated",
        )
