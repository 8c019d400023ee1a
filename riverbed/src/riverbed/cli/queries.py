"""The CLI's reads of Redis about streams: which exist, their entries, groups and consumers.

A group's lag, pending entries and oldest pending entry come from
:mod:`riverbed.consumer_groups`, the reading the monitor's gauges use too, so
``riverbed streams`` and the dashboards never disagree about a group.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from riverbed import keys
from riverbed.cli.render import days
from riverbed.cli.usage import UsageError, checked_stream
from riverbed.connection import Redis
from riverbed.consumer_groups import GroupState, read_groups
from riverbed.entry_ids import as_text
from riverbed.settings import RetentionSettings

#: one stream entry: its id and its fields, as Redis returned them
Entry = tuple[str, dict[Any, Any]]


def text(value: Any) -> str:
    """A reply's bytes as text for a person: a stray byte is replaced, never fatal."""
    return as_text(value, errors="replace")


def entries(result: Any) -> list[Entry]:
    """XRANGE/XREVRANGE replies as (id, fields) pairs; redis-py's reply types vary by mode."""
    return [(text(entry_id), dict(fields or {})) for entry_id, fields in result or []]


async def logical_streams(redis: Redis) -> list[str]:
    """Every logical stream with a stream or a dead-letter stream in Redis."""
    found: set[str] = set()
    for pattern in (keys.stream_key_pattern(), keys.dead_letter_key("*")):
        async for key in redis.scan_iter(match=pattern, count=1000, _type="stream"):
            found.add(keys.logical_stream_of(text(key)))
    return sorted(found)


async def known_stream(redis: Redis, stream: str) -> str:
    """``stream`` if Redis holds it or its dead letters; else a usage error (exit 2) that
    lists the streams it does hold, so a typo is told apart from an empty stream."""
    checked_stream(stream)
    if await redis.exists(keys.stream_key(stream), keys.dead_letter_key(stream)):
        return stream
    known = await logical_streams(redis)
    raise UsageError(
        f"no stream {stream!r} in this Redis; "
        + (f"known streams: {', '.join(known)}" if known else "it holds no Riverbed stream")
    )


@dataclass
class ConsumerInfo:
    name: str
    pending: int
    idle_ms: int
    inactive_ms: int | None  # Redis >= 7.2 only: since the last successful read


@dataclass
class GroupInfo:
    name: str
    lag: int | None  # None: Redis cannot tell, and counting was too costly
    pending: int
    oldest_pending_age_s: float | None  # from the oldest pending entry's id; None: none pending
    last_delivered_id: str
    retries_waiting: int  # this group's retries and deferrals in the stream's delay store
    consumers: list[ConsumerInfo] = field(default_factory=list)


@dataclass
class StreamInfo:
    stream: str
    key: str
    length: int
    dead_letters: int
    delayed: int = 0  # items in the delay store: retries of every group, events for later
    #: what bounds it: "acknowledged" (trimmed to what every group acknowledged) or, for a
    #: stream no group reads, its age limit ("7d"); dead letters have their own age limit
    retention: str = ""
    dead_letter_retention: str = ""
    groups: list[GroupInfo] = field(default_factory=list)


async def _retries_waiting(redis: Redis, stream: str, group: str) -> int:
    """This group's items in the delay store (a scan of the store: an operator's query)."""
    items = redis.hscan_iter(keys.delay_items_key(stream), match=f"retry:{group}:*", count=1000)
    return sum([1 async for _ in items])


async def _consumers(redis: Redis, key: str, group: str) -> list[ConsumerInfo]:
    return [
        ConsumerInfo(
            name=text(c["name"]),
            pending=int(c["pending"]),
            idle_ms=int(c["idle"]),
            inactive_ms=int(c["inactive"]) if c.get("inactive") is not None else None,
        )
        for c in await redis.xinfo_consumers(key, group)
    ]


async def _group_info(redis: Redis, stream: str, state: GroupState, delayed: int) -> GroupInfo:
    key = keys.stream_key(stream)
    return GroupInfo(
        name=state.name,
        lag=state.lag,
        pending=state.pending,
        oldest_pending_age_s=state.oldest_pending_age_s,
        last_delivered_id=state.last_delivered_id,
        retries_waiting=await _retries_waiting(redis, stream, state.name) if delayed else 0,
        consumers=await _consumers(redis, key, state.name),
    )


async def stream_info(redis: Redis, stream: str, *, now: float | None = None) -> StreamInfo:
    """A stream's lengths, retention, groups and their consumers; ages are to ``now``."""
    now = time.time() if now is None else now
    key = keys.stream_key(stream)
    length = int(await redis.xlen(key))
    dead = int(await redis.xlen(keys.dead_letter_key(stream)))
    delayed = int(await redis.zcard(keys.delay_key(stream)))
    retention = RetentionSettings()
    info = StreamInfo(
        stream=stream,
        key=key,
        length=length,
        dead_letters=dead,
        delayed=delayed,
        retention=days(retention.unconsumed_ms(stream)),
        dead_letter_retention=days(retention.dead_letter_ms),
    )
    if not await redis.exists(key):
        return info
    groups = await read_groups(redis, key, now=now)
    if groups:
        info.retention = "acknowledged"
    for state in groups:
        info.groups.append(await _group_info(redis, stream, state, delayed))
    return info


async def group_names(redis: Redis, stream: str) -> list[str]:
    """The names of the stream's consumer groups, in Redis's order."""
    return [text(g["name"]) for g in await redis.xinfo_groups(keys.stream_key(stream))]
