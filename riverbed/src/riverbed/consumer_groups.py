"""What Redis knows about a stream's consumer groups: lag, pending entries, oldest pending.

One reading for the two places that report it: the monitor's gauges
(:class:`riverbed.monitor.StreamMonitor`) and the operator CLI's ``riverbed streams``.
Lag that Redis reports as unknown (nil after deletions) is counted past the group's last
delivered id when that is cheap, and otherwise stays unknown (``None``) — never 0, which
would claim a caught-up group.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from riverbed.connection import Redis
from riverbed.entry_ids import as_text, id_ms, next_id

#: counting entries past last-delivered-id costs O(n); give up beyond this many
LAG_COUNT_LIMIT = 10_000


@dataclass(frozen=True)
class GroupState:
    """One consumer group of one stream, as XINFO GROUPS and XPENDING tell it."""

    name: str
    lag: int | None  # None: Redis cannot tell, and counting was too costly
    pending: int  # delivered to a consumer, not acknowledged yet
    oldest_pending_age_s: float | None  # from the oldest pending entry's id; None: none pending
    last_delivered_id: str


async def read_groups(
    redis: Redis, key: str, *, lag_count_limit: int = LAG_COUNT_LIMIT, now: float | None = None
) -> list[GroupState]:
    """Every group of the stream at ``key`` (none if the stream does not exist)."""
    return [
        await read_group(redis, key, group, lag_count_limit=lag_count_limit, now=now)
        for group in await redis.xinfo_groups(key)
    ]


async def read_group(
    redis: Redis,
    key: str,
    group: Mapping[Any, Any],
    *,
    lag_count_limit: int = LAG_COUNT_LIMIT,
    now: float | None = None,
) -> GroupState:
    """The state of one group from its XINFO GROUPS row (``group``), completed with the lag
    Redis left unknown and the age of its oldest pending entry (ages are to ``now``, or to
    the moment that entry is read)."""
    name = as_text(group["name"], errors="replace")
    last_delivered = as_text(group["last-delivered-id"])
    lag = group.get("lag")
    if lag is None:
        lag = await count_after(redis, key, last_delivered, limit=lag_count_limit)
    pending = int(group["pending"])
    age: float | None = None
    if pending:
        oldest = await oldest_pending_id(redis, key, name)
        if oldest:
            moment = time.time() if now is None else now
            age = max(moment - id_ms(oldest) / 1000, 0.0)
    return GroupState(
        name=name,
        lag=None if lag is None else int(lag),
        pending=pending,
        oldest_pending_age_s=age,
        last_delivered_id=last_delivered,
    )


async def count_after(redis: Redis, key: str, last_delivered: str, *, limit: int) -> int | None:
    """Entries after ``last_delivered``, when there are at most ``limit`` of them."""
    start = next_id(last_delivered) if last_delivered != "0-0" else "-"
    entries = await redis.xrange(key, min=start, max="+", count=limit + 1) or []
    return None if len(entries) > limit else len(entries)


async def oldest_pending_id(redis: Redis, key: str, group: str) -> str | None:
    """The id of the group's oldest entry delivered and not acknowledged; None if none."""
    oldest = (await redis.xpending(key, group)).get("min")
    return as_text(oldest) if oldest else None
