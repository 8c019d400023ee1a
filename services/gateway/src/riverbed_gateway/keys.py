"""The gateway's Redis keys, all under ``rb:gateway:``.

They are per API key or per request, not per stream: each gets its own hash tag and is
never used in one script with a stream.
"""

from __future__ import annotations

from riverbed.keys import hash_tag, owned_key, owner_prefix

#: where every key of the gateway starts
KEY_PREFIX = owner_prefix("gateway")


def api_keys_key() -> str:
    """Hash: sha256 of an API key (hex) -> JSON {name, scopes, created_at}. No TTL."""
    return owned_key(KEY_PREFIX, "api-keys")


def request_idempotency_key(api_key_name: str, idempotency_key: str) -> str:
    """JSON record of one idempotent request (TTL: the idempotency window, 24 h default)."""
    return owned_key(KEY_PREFIX, "idem", hash_tag(api_key_name), idempotency_key)


def rate_limit_key(api_key_name: str) -> str:
    """GCRA state of one API key: its theoretical arrival time (TTL: one burst period)."""
    return owned_key(KEY_PREFIX, "rate", hash_tag(api_key_name))


def inbound_event_key(provider: str, provider_event_id: str) -> str:
    """Marker of a provider webhook event already published (TTL: the dedup window)."""
    return owned_key(KEY_PREFIX, "inbound", hash_tag(provider), provider_event_id)
