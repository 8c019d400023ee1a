"""The payments service's Redis keys, all under ``rb:payments:``."""

from __future__ import annotations

from riverbed.keys import owned_key, owner_prefix

#: where every key of the payments service starts
KEY_PREFIX = owner_prefix("payments")


def reconciliation_lease_key(report_id: str) -> str:
    """Lease of the replica matching a settlement report (token; TTL: the lease, renewed)."""
    return owned_key(KEY_PREFIX, "reconciliation", report_id, "lease")
