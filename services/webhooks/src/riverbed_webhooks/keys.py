"""The webhooks service's Redis keys, all under ``rb:webhooks:``.

Per subscriber endpoint, not per stream: each endpoint is its own hash tag.
"""

from __future__ import annotations

from riverbed.keys import hash_tag, owned_key, owner_prefix

#: where every key of the webhooks service starts
KEY_PREFIX = owner_prefix("webhooks")


def webhook_rate_limit_key(endpoint_id: str) -> str:
    """GCRA state of one webhook endpoint's rate limit: its theoretical arrival time (ms since
    the epoch, Redis clock). TTL: until the state no longer limits anything (at most ~1 s)."""
    return owned_key(KEY_PREFIX, "rate", hash_tag(endpoint_id))
