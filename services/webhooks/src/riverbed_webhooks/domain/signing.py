"""Standard Webhooks signing: ``whsec_`` secrets and ``v1,<base64 HMAC-SHA256>`` signatures.

The signed content is ``<webhook-id>.<webhook-timestamp>.<body>`` with the
base64-decoded part of the secret after ``whsec_`` as the HMAC key. During a
secret rotation the old and new signatures are both sent, space-separated, and a
receiver accepts the request if any of them verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Final

from riverbed.errors import RiverbedError

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES: Final = 32  # bytes of randomness in a generated secret (the spec asks >= 24)
MIN_SECRET_BYTES: Final = 24


class InvalidSecret(RiverbedError, ValueError):
    """A string that is not a ``whsec_``-prefixed base64 secret of at least 24 bytes."""


def generate_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of ``secret``: the base64-decoded part after ``whsec_``."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret(f"a signing secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as error:
        raise InvalidSecret("a signing secret is base64 after 'whsec_'") from error
    if len(key) < MIN_SECRET_BYTES:
        raise InvalidSecret(f"a signing secret holds at least {MIN_SECRET_BYTES} bytes")
    return key


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of id.timestamp.body>``; ``timestamp`` in s since the epoch."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated."""
    if not secrets_:
        raise ValueError("at least one secret is needed to sign")
    return " ".join(sign(secret, webhook_id, timestamp, body) for secret in secrets_)


def signed_headers(
    secrets_: Sequence[str], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers of one request."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets_, webhook_id, timestamp, body),
    }
