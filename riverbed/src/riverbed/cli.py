"""``riverbed``: the operator's view of Riverbed's streams, for a terminal or a script.

::

    riverbed streams                        every stream: length, dead letters, groups, consumers
    riverbed tail STREAM [-n N] [--follow]  the newest events of a stream, decoded
    riverbed dlq list STREAM [FILTERS]      dead-lettered entries: type, reason, error, attempts
    riverbed dlq show STREAM ENTRY_ID       one dead-lettered entry, its event in full
    riverbed dlq replay STREAM (ENTRY_ID ... | --all) [FILTERS] [--dry-run]
    riverbed dlq purge STREAM (ENTRY_ID ... | --all) [FILTERS] [--dry-run] [--yes]
    riverbed publish TYPE [--data JSON]     publish a test event (its contract's example by default)
    riverbed schedules list                 recurring schedules: status, rule, next and last fire
    riverbed schedules show NAME            one schedule in full
    riverbed schedules upsert NAME (--cron EXPR [--tz ZONE] | --every SECONDS) --type TYPE
                      --data JSON [--subject S] [--source URI] [--start ISO] [--end ISO] [--limit N]
    riverbed schedules pause|resume|remove NAME

FILTERS: ``--type 'email.*'`` (event type, shell-style pattern), ``--error TEXT`` (in the
error type or message, any case), ``--reason REASON``, ``--since WHEN``, ``--until WHEN``
(when it was dead-lettered: ISO 8601, or an age such as ``30m``, ``2h``, ``7d``).

STREAM is a logical stream name (``email.requested``: the key ``rb:{email.requested}:stream``).
Every command takes ``--json``: one JSON document on stdout (``tail``: one JSON object per
line), nothing else. Redis is ``REDIS_URL``, as for the services, or ``--redis-url``.

Replay appends the dead-lettered event, unchanged (same event id), to its stream and removes
it from the dead-letter stream, both in one script. Every group of the stream sees it again;
groups that handled that event id within their idempotency window
(``RIVERBED_CONSUMER_IDEMPOTENCY_TTL_S``, 24 h) skip it.

Schedules are published by the schedulers that run in the services (the gateway runs one),
exactly once each; see :mod:`riverbed.schedules`. Upserting the definition already stored
changes nothing; ``--tz`` defaults to UTC.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from pydantic import ValidationError
from redis.exceptions import RedisClusterException, RedisError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from riverbed import keys, scripts
from riverbed.connection import Redis, connect, redacted_url
from riverbed.monitor import LAG_COUNT_LIMIT
from riverbed.publisher import Publisher
from riverbed.schedules import (
    ScheduleDefinition,
    ScheduleError,
    ScheduleStore,
    ScheduleView,
    check_name,
    parse_time,
)
from riverbed.settings import RedisSettings, RetentionSettings
from riverbed_contracts import CloudEvent
from riverbed_contracts.envelope import ENTRY_FIELD, EntryDecodeError, event_from_entry
from riverbed_contracts.registry import REGISTRY, UnknownEventType, get_spec

#: entries read per XRANGE round trip when scanning a dead-letter stream
PAGE = 500


class UsageError(Exception):
    """Something the operator asked that cannot be done as asked; the message says why."""


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


Entry = tuple[str, dict[Any, Any]]


def _entries(result: Any) -> list[Entry]:
    """XRANGE/XREVRANGE replies as (id, fields) pairs; redis-py's reply types vary by mode."""
    return [(_text(entry_id), dict(fields or {})) for entry_id, fields in result or []]


def _one_line(message: str) -> str:
    """A validation error's lines joined, without pydantic's link to its docs."""
    lines = (line.strip() for line in message.splitlines())
    return "; ".join(line for line in lines if line and not line.startswith("For further"))


def _id_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def _next_id(entry_id: str) -> str:
    ms, seq = entry_id.split("-", 1)
    return f"{ms}-{int(seq) + 1}"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _duration(seconds: float | None) -> str:
    """``95.2`` -> ``1m 35s``: ages and idle times at a glance."""
    if seconds is None:
        return "?"
    total = int(seconds)
    if total < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    return f"{hours // 24}d {hours % 24}h"


_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_AGE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_when(value: str, *, now: float | None = None) -> int:
    """``30m`` (that long ago) or an ISO 8601 time -> milliseconds since the epoch."""
    now = time.time() if now is None else now
    age = _AGE.match(value.strip())
    if age:
        return int((now - float(age.group(1)) * _AGE_SECONDS[age.group(2)]) * 1000)
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{value!r} is not a time: give an ISO 8601 time (2024-05-01T12:00:00Z) "
            "or an age such as 90s, 30m, 2h, 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


_ENTRY_ID = re.compile(r"^\d+-\d+$")


def _check_entry_id(entry_id: str) -> str:
    if not _ENTRY_ID.match(entry_id):
        raise UsageError(
            f"{entry_id!r} is not a stream entry id: give <ms>-<seq>, as 'riverbed dlq list' shows"
        )
    return entry_id


def _check_stream(stream: str) -> str:
    try:
        keys.stream_key(stream)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return stream


async def _known_stream(redis: Redis, stream: str) -> str:
    """``stream`` if Redis holds it or its dead letters; else a usage error (exit 2) that
    lists the streams it does hold, so a typo is told apart from an empty stream."""
    _check_stream(stream)
    if await redis.exists(keys.stream_key(stream), keys.dead_letter_key(stream)):
        return stream
    known = await _logical_streams(redis)
    raise UsageError(
        f"no stream {stream!r} in this Redis; "
        + (f"known streams: {', '.join(known)}" if known else "it holds no Riverbed stream")
    )


def _print_table(out: Console, table: Table) -> None:
    """A rich table on a terminal; elsewhere (a log, a pipe) plain tab-separated lines, so
    no column is squeezed to the 80 characters rich assumes without a terminal."""
    if out.is_terminal:
        out.print(table)
        return
    lines = []
    if table.title:
        lines.append(f"# {Text.from_markup(str(table.title)).plain}")
    columns = table.columns
    lines.append("\t".join(Text.from_markup(str(c.header)).plain for c in columns))
    for row in zip(*(c.cells for c in columns), strict=True):
        lines.append(
            "\t".join(Text.from_markup(c).plain if isinstance(c, str) else str(c) for c in row)
        )
    # straight to the file: rich would expand the tabs into spaces
    out.file.write("\n".join(lines) + "\n")


# -- streams ----------------------------------------------------------------------------


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


async def _logical_streams(redis: Redis) -> list[str]:
    """Every logical stream with a stream or a dead-letter stream in Redis."""
    found: set[str] = set()
    for pattern in (keys.stream_key_pattern(), keys.dead_letter_key("*")):
        async for key in redis.scan_iter(match=pattern, count=1000, _type="stream"):
            found.add(keys.logical_stream_of(_text(key)))
    return sorted(found)


async def _lag(redis: Redis, key: str, group: dict[Any, Any]) -> int | None:
    lag = group.get("lag")
    if lag is not None:
        return int(lag)
    last = _text(group["last-delivered-id"])
    start = _next_id(last) if last != "0-0" else "-"
    entries = await redis.xrange(key, min=start, max="+", count=LAG_COUNT_LIMIT + 1) or []
    return None if len(entries) > LAG_COUNT_LIMIT else len(entries)


async def _retries_waiting(redis: Redis, stream: str, group: str) -> int:
    """This group's items in the delay store (a scan of the store: an operator's query)."""
    items = redis.hscan_iter(keys.delay_items_key(stream), match=f"retry:{group}:*", count=1000)
    return sum([1 async for _ in items])


async def stream_info(redis: Redis, stream: str, *, now: float | None = None) -> StreamInfo:
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
        retention=_days(retention.unconsumed_ms(stream)),
        dead_letter_retention=_days(retention.dead_letter_ms),
    )
    if not await redis.exists(key):
        return info
    groups = await redis.xinfo_groups(key)
    if groups:
        info.retention = "acknowledged"
    for group in groups:
        name = _text(group["name"])
        pending = int(group["pending"])
        age: float | None = None
        if pending:
            oldest = (await redis.xpending(key, name)).get("min")
            if oldest:
                age = max(now - _id_ms(_text(oldest)) / 1000, 0.0)
        consumers = [
            ConsumerInfo(
                name=_text(c["name"]),
                pending=int(c["pending"]),
                idle_ms=int(c["idle"]),
                inactive_ms=int(c["inactive"]) if c.get("inactive") is not None else None,
            )
            for c in await redis.xinfo_consumers(key, name)
        ]
        info.groups.append(
            GroupInfo(
                name=name,
                lag=await _lag(redis, key, group),
                pending=pending,
                oldest_pending_age_s=age,
                last_delivered_id=_text(group["last-delivered-id"]),
                retries_waiting=await _retries_waiting(redis, stream, name) if delayed else 0,
                consumers=consumers,
            )
        )
    return info


def _days(ms: int) -> str:
    days = ms / 86_400_000
    return f"{days:g}d"


async def cmd_streams(redis: Redis, args: argparse.Namespace, out: Console, err: Console) -> int:
    names = [await _known_stream(redis, s) for s in args.stream] or await _logical_streams(redis)
    infos = [await stream_info(redis, name) for name in names]
    if args.json:
        _print_json(out, {"streams": [asdict(i) for i in infos]})
        return 0
    if not infos:
        out.print("no Riverbed streams in this Redis (keys rb:{<stream>}:stream)")
        return 0
    table = Table(title="streams", title_justify="left")
    for column in ("stream", "length", "dead letters", "group", "lag", "pending"):
        table.add_column(column, justify="left" if column in ("stream", "group") else "right")
    table.add_column("oldest pending", justify="right")
    table.add_column("retries", justify="right")
    table.add_column("consumers", justify="right")
    table.add_column("retention", justify="left")
    for info in infos:
        dead = f"[bold red]{info.dead_letters}[/]" if info.dead_letters else "0"
        retention = f"{info.retention}; dead letters {info.dead_letter_retention}"
        if not info.groups:
            table.add_row(
                escape(info.stream), str(info.length), dead, "-", "", "", "", "", "", retention
            )
        for group in info.groups:
            age = group.oldest_pending_age_s
            table.add_row(
                escape(info.stream),
                str(info.length),
                dead,
                escape(group.name),
                "?" if group.lag is None else str(group.lag),
                str(group.pending),
                "-" if age is None else _duration(age),
                str(group.retries_waiting),
                str(len(group.consumers)),
                retention,
            )
    _print_table(out, table)
    consumers = Table(title="consumers", title_justify="left")
    for column in ("stream", "group", "consumer", "pending", "idle", "inactive"):
        consumers.add_column(column, overflow="fold")
    for info in infos:
        for group in info.groups:
            for c in group.consumers:
                consumers.add_row(
                    escape(info.stream),
                    escape(group.name),
                    escape(c.name),
                    str(c.pending),
                    _duration(c.idle_ms / 1000),
                    "-" if c.inactive_ms is None else _duration(c.inactive_ms / 1000),
                )
    if consumers.row_count:
        _print_table(out, consumers)
    return 0


# -- tail ---------------------------------------------------------------------------------


def _decoded(entry_id: str, fields: dict[Any, Any]) -> dict[str, Any]:
    try:
        event = event_from_entry(fields)
    except EntryDecodeError as error:
        return {
            "entry_id": entry_id,
            "error": _one_line(str(error)),
            "fields": {_text(k): _text(v) for k, v in fields.items()},
        }
    return {"entry_id": entry_id, "event": event.model_dump(mode="json", exclude_none=True)}


def _event_line(item: dict[str, Any]) -> str:
    entry_id = escape(item["entry_id"])
    if "event" not in item:
        return f"[dim]{entry_id}[/] [bold red]undecodable[/] {escape(item['error'])}"
    event = item["event"]
    subject = f" subject={escape(event['subject'])}" if event.get("subject") else ""
    data = escape(json.dumps(event.get("data"), separators=(",", ":"), ensure_ascii=False))
    return (
        f"[dim]{entry_id}[/] {escape(event['time'])} [bold]{escape(event['type'])}[/] "
        f"id={escape(event['id'])}{subject} {data}"
    )


async def cmd_tail(redis: Redis, args: argparse.Namespace, out: Console, err: Console) -> int:
    key = keys.stream_key(await _known_stream(redis, args.stream))
    newest = _entries(await redis.xrevrange(key, count=args.count)) if args.count > 0 else []
    if newest:
        last_id = newest[0][0]
    else:  # nothing shown: follow from the stream's current end (or the start of an empty one)
        tip = _entries(await redis.xrevrange(key, count=1))
        last_id = tip[0][0] if tip else "0-0"
    shown = 0

    def emit(entry_id: str, fields: dict[Any, Any]) -> None:
        nonlocal shown
        item = _decoded(entry_id, fields)
        if args.json:
            out.file.write(json.dumps(item, ensure_ascii=False) + "\n")
            out.file.flush()
        else:
            out.print(_event_line(item), soft_wrap=True)
        shown += 1

    for entry_id, fields in reversed(newest):
        emit(entry_id, fields)
    if not args.follow:
        if not newest and not args.json:
            out.print(f"no entries in {escape(key)}")
        return 0
    while args.limit is None or shown < args.limit:
        answer: Any = await redis.xread({key: last_id}, count=100, block=1000)
        for _, batch in answer or []:
            for entry_id, fields in _entries(batch):
                emit(entry_id, fields)
                last_id = entry_id
                if args.limit is not None and shown >= args.limit:
                    break
    return 0


# -- dead letters ------------------------------------------------------------------------


@dataclass
class DeadLetter:
    """One entry of ``rb:{<stream>}:dlq``, as the consumer wrote it."""

    dlq_id: str
    fields: dict[str, str]
    event: CloudEvent | None
    decode_error: str | None

    @classmethod
    def of(cls, entry_id: Any, raw: dict[Any, Any]) -> DeadLetter:
        fields = {_text(k): _text(v) for k, v in raw.items()}
        try:
            event: CloudEvent | None = event_from_entry(raw)
            error = None
        except EntryDecodeError as problem:
            event, error = None, _one_line(str(problem))
        return cls(_text(entry_id), fields, event, error)

    @property
    def type(self) -> str:
        return self.event.type if self.event else "?"

    @property
    def dead_lettered_ms(self) -> int:
        """When it was dead-lettered, by Redis's clock: the time part of its entry id."""
        return _id_ms(self.dlq_id)

    def as_json(self) -> dict[str, Any]:
        fields = {k: v for k, v in self.fields.items() if k != ENTRY_FIELD}
        return {
            "dlq_id": self.dlq_id,
            "dead_lettered_at": _iso(self.dead_lettered_ms),
            **fields,
            "event": self.event.model_dump(mode="json", exclude_none=True)
            if self.event
            else self.fields.get(ENTRY_FIELD),
            **({"decode_error": self.decode_error} if self.decode_error else {}),
        }


@dataclass(frozen=True)
class Filters:
    type: str | None = None
    error: str | None = None
    reason: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Filters:
        return cls(
            type=args.type,
            error=args.error,
            reason=args.reason,
            since_ms=parse_when(args.since) if args.since else None,
            until_ms=parse_when(args.until) if args.until else None,
        )

    @property
    def any(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    def match(self, entry: DeadLetter) -> bool:
        if self.type is not None and not fnmatch.fnmatchcase(entry.type, self.type):
            return False
        if self.reason is not None and entry.fields.get("reason") != self.reason:
            return False
        if self.error is not None:
            text = f"{entry.fields.get('error_type', '')}: {entry.fields.get('error_message', '')}"
            if self.error.lower() not in text.lower():
                return False
        if self.since_ms is not None and entry.dead_lettered_ms < self.since_ms:
            return False
        return self.until_ms is None or entry.dead_lettered_ms <= self.until_ms


async def dead_letters(
    redis: Redis, stream: str, filters: Filters = Filters()
) -> AsyncIterator[DeadLetter]:
    """The dead-lettered entries of ``stream`` matching ``filters``, oldest first, in pages."""
    key = keys.dead_letter_key(stream)
    # the entry id is when it was dead-lettered (XADD *): the time filters bound the range
    start = str(filters.since_ms) if filters.since_ms is not None else "-"
    end = str(filters.until_ms) if filters.until_ms is not None else "+"
    while True:
        page = _entries(await redis.xrange(key, min=start, max=end, count=PAGE))
        for entry_id, raw in page:
            entry = DeadLetter.of(entry_id, raw)
            if filters.match(entry):
                yield entry
        if len(page) < PAGE:
            return
        start = "(" + page[-1][0]  # exclusive start, Redis >= 6.2


async def _selected(redis: Redis, args: argparse.Namespace) -> list[DeadLetter]:
    """The entries a replay or purge acts on: the ids given, or --all that match the filters."""
    stream = await _known_stream(redis, args.stream)
    filters = Filters.from_args(args)
    if args.ids and args.all:
        raise UsageError("give entry ids or --all, not both")
    if not args.ids and not args.all:
        raise UsageError(
            "name the dead-lettered entries (ids from 'riverbed dlq list'), "
            "or --all (with --type/--error/--reason/--since/--until to narrow it)"
        )
    if args.all:
        return [entry async for entry in dead_letters(redis, stream, filters)]
    key = keys.dead_letter_key(stream)
    found: list[DeadLetter] = []
    for wanted in map(_check_entry_id, args.ids):
        page = _entries(await redis.xrange(key, min=wanted, max=wanted))
        if not page:
            raise UsageError(f"no entry {wanted} in {key}")
        entry = DeadLetter.of(page[0][0], page[0][1])
        if filters.match(entry):
            found.append(entry)
    return found


def _dead_letter_table(title: str, entries: Sequence[DeadLetter]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("dlq id", overflow="fold")
    table.add_column("dead-lettered")
    table.add_column("type", overflow="fold")
    table.add_column("event id", overflow="fold")
    table.add_column("reason")
    table.add_column("attempts", justify="right")
    table.add_column("group")
    table.add_column("error", overflow="fold")
    for entry in entries:
        error = entry.fields.get("error_type", "")
        if entry.fields.get("error_message"):
            error = f"{error}: {entry.fields['error_message']}"
        table.add_row(
            escape(entry.dlq_id),
            _iso(entry.dead_lettered_ms),
            escape(entry.type),
            escape(entry.event.id if entry.event else "-"),
            escape(entry.fields.get("reason", "")),
            escape(entry.fields.get("attempts", "")),
            escape(entry.fields.get("group", "")),
            escape(error[:200]),
        )
    return table


async def cmd_dlq_list(redis: Redis, args: argparse.Namespace, out: Console, err: Console) -> int:
    stream = await _known_stream(redis, args.stream)
    entries: list[DeadLetter] = []
    total = 0
    async for entry in dead_letters(redis, stream, Filters.from_args(args)):
        total += 1
        if len(entries) < args.limit:
            entries.append(entry)
    key = keys.dead_letter_key(stream)
    if args.json:
        _print_json(
            out,
            {
                "stream": stream,
                "dead_letter_key": key,
                "matched": total,
                "entries": [e.as_json() for e in entries],
            },
        )
        return 0
    if not total:
        out.print(f"no matching entries in {escape(key)}")
        return 0
    _print_table(out, _dead_letter_table(f"{key}: {total} matching", entries))
    if total > len(entries):
        out.print(f"showing the oldest {len(entries)} of {total}; --limit shows more")
    return 0


async def cmd_dlq_show(redis: Redis, args: argparse.Namespace, out: Console, err: Console) -> int:
    key = keys.dead_letter_key(await _known_stream(redis, args.stream))
    entry_id = _check_entry_id(args.entry_id)
    page = _entries(await redis.xrange(key, min=entry_id, max=entry_id))
    if not page:
        raise UsageError(f"no entry {entry_id} in {key}")
    document = DeadLetter.of(page[0][0], page[0][1]).as_json()
    if args.json:
        _print_json(out, document)
    else:
        out.print_json(data=document)
    return 0


async def _other_groups(redis: Redis, stream: str, entries: Sequence[DeadLetter]) -> list[str]:
    """Groups of the stream that a replay reaches besides the one each entry failed in: only
    entries dead-lettered without a group go to every group."""
    key = keys.stream_key(stream)
    if not await redis.exists(key) or all(e.fields.get("group") for e in entries):
        return []
    failed_in = {e.fields.get("group") for e in entries}
    return sorted(
        name
        for name in (_text(g["name"]) for g in await redis.xinfo_groups(key))
        if name not in failed_in
    )


async def cmd_dlq_replay(redis: Redis, args: argparse.Namespace, out: Console, err: Console) -> int:
    stream = await _known_stream(redis, args.stream)
    entries = await _selected(redis, args)
    replayable = [e for e in entries if e.event is not None]
    skipped = [e for e in entries if e.event is None]
    others = await _other_groups(redis, stream, replayable)
    replayed: list[dict[str, str]] = []
    vanished: list[str] = []
    if not args.dry_run:
        script = redis.register_script(scripts.REPLAY_DEAD_LETTER)
        stream_key, dlq_key = keys.stream_key(stream), keys.dead_letter_key(stream)
        for entry in replayable:
            new_id = await script(keys=[stream_key, dlq_key], args=[entry.dlq_id])
            if new_id is None:
                vanished.append(entry.dlq_id)  # replayed or purged by someone else meanwhile
                continue
            assert entry.event is not None
            replayed.append(
                {"dlq_id": entry.dlq_id, "entry_id": _text(new_id), "event_id": entry.event.id}
            )
    report = {
        "stream": stream,
        "dry_run": args.dry_run,
        "matched": len(entries),
        "replayed": replayed,
        "would_replay": [e.dlq_id for e in replayable] if args.dry_run else [],
        "skipped": [{"dlq_id": e.dlq_id, "reason": e.decode_error} for e in skipped],
        "already_gone": vanished,
        "other_groups": others,
    }
    if args.json:
        _print_json(out, report)
        return 0
    if args.dry_run:
        _print_table(
            out, _dead_letter_table(f"dry run: would replay {len(replayable)}", replayable)
        )
    else:
        out.print(f"replayed {len(replayed)} of {len(entries)} onto {keys.stream_key(stream)}")
        for item in replayed:
            out.print(f"  {item['dlq_id']} -> {item['entry_id']} (event {item['event_id']})")
    for entry in skipped:
        out.print(
            f"[yellow]skipped {entry.dlq_id}: not a CloudEvent, cannot be replayed "
            f"({escape(entry.decode_error or '')}); inspect it with 'riverbed dlq show', "
            "then purge it[/]"
        )
    for dlq_id in vanished:
        out.print(f"[yellow]{dlq_id} was no longer in the dead-letter stream[/]")
    if others and replayable:
        out.print(
            f"note: groups {', '.join(others)} also read {stream}; they skip an event id they "
            "handled within their idempotency window (RIVERBED_CONSUMER_IDEMPOTENCY_TTL_S)"
        )
    return 0


def _confirmed(stream: str, count: int, out: Console) -> bool:
    out.print(
        f"[bold]Delete {count} dead-lettered entr{'y' if count == 1 else 'ies'} of {stream} "
        "for good?[/] Type the stream name to confirm: ",
        end="",
    )
    try:
        answer = input()
    except EOFError:  # no one to ask (stdin closed): not confirmed
        out.print()
        answer = ""
    return answer.strip() == stream


async def cmd_dlq_purge(redis: Redis, args: argparse.Namespace, out: Console, err: Console) -> int:
    stream = await _known_stream(redis, args.stream)
    entries = await _selected(redis, args)
    ids = [e.dlq_id for e in entries]
    if args.dry_run or not ids:
        if args.json:
            _print_json(out, {"stream": stream, "dry_run": args.dry_run, "would_delete": ids})
        elif ids:
            _print_table(out, _dead_letter_table(f"dry run: would delete {len(ids)}", entries))
        else:
            out.print("nothing matched; nothing deleted")
        return 0
    if not args.yes and not _confirmed(stream, len(ids), err):
        err.print("not confirmed; nothing deleted (--yes skips the question)")
        return 1
    key = keys.dead_letter_key(stream)
    deleted = 0
    for start in range(0, len(ids), PAGE):
        deleted += int(await redis.xdel(key, *ids[start : start + PAGE]))
    if args.json:
        _print_json(out, {"stream": stream, "dry_run": False, "deleted": deleted, "ids": ids})
    else:
        out.print(f"deleted {deleted} entr{'y' if deleted == 1 else 'ies'} from {escape(key)}")
    return 0


# -- publish -------------------------------------------------------------------------------


def _example(event_type: str) -> dict[str, Any]:
    schema = get_spec(event_type).model.model_json_schema()
    examples = schema.get("examples") or []
    if not examples:
        raise UsageError(f"{event_type} has no example in its contract; give --data")
    example: dict[str, Any] = examples[0]
    return example


def _data(args: argparse.Namespace) -> dict[str, Any]:
    if args.data is None:
        return _example(args.type)
    raw = args.data
    if raw.startswith("@"):
        try:
            with open(raw[1:], encoding="utf-8") as file:
                raw = file.read()
        except OSError as error:
            raise UsageError(f"cannot read --data file {raw[1:]!r}: {error}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        raise UsageError(f"--data is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise UsageError("--data must be a JSON object")
    return data


async def cmd_publish(redis: Redis, args: argparse.Namespace, out: Console, err: Console) -> int:
    try:
        spec = get_spec(args.type)
    except UnknownEventType as error:
        raise UsageError(str(error)) from None
    stream = _check_stream(args.stream) if args.stream else spec.stream
    data = _data(args)
    attributes: dict[str, Any] = {"source": args.source}
    if args.subject:
        attributes["subject"] = args.subject
    events = [CloudEvent(type=spec.type, data=data, **attributes) for _ in range(args.count)]
    try:
        entry_ids = await Publisher(redis).publish_many(events, stream=stream)
    except ValidationError as error:
        raise UsageError(f"--data does not fit {spec.type}: {_one_line(str(error))}") from None
    published = [
        {"event_id": e.id, "type": e.type, "stream": stream, "entry_id": i}
        for e, i in zip(events, entry_ids, strict=True)
    ]
    if args.json:
        _print_json(out, {"published": published})
    else:
        for item in published:
            out.print(
                f"published {item['type']} {item['event_id']} as {item['entry_id']} "
                f"on {escape(keys.stream_key(stream))}"
            )
    return 0


# -- schedules -----------------------------------------------------------------------------


def _rule(schedule: dict[str, Any]) -> str:
    if schedule.get("cron"):
        return f"{schedule['cron']} ({schedule['tz']})"
    if schedule.get("every_s"):
        return f"every {schedule['every_s']}s"
    return "?"


def _schedule_line(view: ScheduleView) -> str:
    document = view.as_json()
    upcoming = document.get("next_fire") or "-"
    return f"{view.status}; next fire {upcoming}; publishes onto {keys.stream_key(view.stream)}"


async def cmd_schedules_list(
    redis: Redis, args: argparse.Namespace, out: Console, err: Console
) -> int:
    views = await ScheduleStore(redis).list()
    if args.json:
        _print_json(out, {"schedules": [v.as_json() for v in views]})
        return 0
    if not views:
        out.print("no schedules (riverbed schedules upsert NAME … creates one)")
        return 0
    table = Table(title="schedules", title_justify="left")
    for column in ("name", "status", "rule", "type", "next fire", "last fire", "fired", "skipped"):
        table.add_column(column, justify="right" if column in ("fired", "skipped") else "left")
    for view in views:
        document = view.as_json()
        status: str = view.status
        if status in ("missing", "moving"):
            status = f"[yellow]{status}[/]"  # an interrupted write: upsert or remove fixes it
        table.add_row(
            escape(view.name),
            status,
            escape(_rule(document)),
            escape(document.get("type", "?")),
            document.get("next_fire") or "-",
            document.get("last_fire") or "-",
            str(document.get("fired", 0)),
            str(document.get("misfires_skipped", 0)),
        )
    _print_table(out, table)
    if any(v.status in ("missing", "moving") for v in views):
        out.print(
            "[yellow]missing/moving: a change was interrupted; these fire nothing until "
            "'riverbed schedules upsert' (or remove) is run for them again[/]"
        )
    return 0


def _unknown_schedule(name: str) -> UsageError:
    return UsageError(f"no schedule named {name!r}; 'riverbed schedules list' shows them")


async def cmd_schedules_show(
    redis: Redis, args: argparse.Namespace, out: Console, err: Console
) -> int:
    view = await ScheduleStore(redis).get(_schedule_name(args.name))
    if view is None:
        raise _unknown_schedule(args.name)
    if args.json:
        _print_json(out, view.as_json())
    else:
        out.print_json(data=view.as_json())
    return 0


def _schedule_name(name: str) -> str:
    try:
        return check_name(name)
    except ScheduleError as error:
        raise UsageError(str(error)) from None


def _bound(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value, what=option)
    except ScheduleError as error:
        raise UsageError(str(error)) from None


async def cmd_schedules_upsert(
    redis: Redis, args: argparse.Namespace, out: Console, err: Console
) -> int:
    try:
        definition = ScheduleDefinition(
            name=_schedule_name(args.name),
            type=args.type,
            data=_data(args),
            cron=args.cron,
            tz=args.tz,
            every_s=args.every,
            subject=args.subject,
            source=args.source,
            start_ms=_bound(args.start, "--start"),
            end_ms=_bound(args.end, "--end"),
            limit=args.limit,
        )
        upserted = await ScheduleStore(redis).upsert(definition)
    except ScheduleError as error:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors)
        raise UsageError(f"{error}{': ' + details if details else ''}") from None
    if args.json:
        _print_json(out, {"outcome": upserted.outcome, "schedule": upserted.schedule.as_json()})
    else:
        out.print(
            f"{upserted.outcome} schedule {escape(args.name)}: {_schedule_line(upserted.schedule)}"
        )
    return 0


async def cmd_schedules_pause(
    redis: Redis, args: argparse.Namespace, out: Console, err: Console
) -> int:
    store = ScheduleStore(redis)
    name = _schedule_name(args.name)
    view = await (store.pause(name) if args.action == "pause" else store.resume(name))
    if view is None:
        raise _unknown_schedule(args.name)
    if args.json:
        _print_json(out, view.as_json())
    else:
        out.print(f"schedule {escape(args.name)}: {_schedule_line(view)}")
    return 0


async def cmd_schedules_remove(
    redis: Redis, args: argparse.Namespace, out: Console, err: Console
) -> int:
    if not await ScheduleStore(redis).remove(_schedule_name(args.name)):
        raise _unknown_schedule(args.name)
    if args.json:
        _print_json(out, {"removed": args.name})
    else:
        out.print(f"removed schedule {escape(args.name)}; it fires no more")
    return 0


# -- plumbing --------------------------------------------------------------------------------


def _print_json(out: Console, document: Any) -> None:
    """One JSON document on the command's output, untouched by rich's markup and wrapping."""
    out.file.write(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")
    out.file.flush()


def _add_filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters")
    group.add_argument("--type", help="event type, shell-style pattern: 'email.*'")
    group.add_argument("--error", help="text in the error type or message (any case)")
    group.add_argument("--reason", help="the consumer's reason: permanent, exhausted, invalid…")
    group.add_argument("--since", help="dead-lettered at or after: ISO 8601, or an age (2h, 7d)")
    group.add_argument("--until", help="dead-lettered at or before: ISO 8601, or an age")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON on stdout"
    )
    common.add_argument(
        "--redis-url",
        default=argparse.SUPPRESS,
        help="Redis to inspect (default: REDIS_URL, as the services use)",
    )
    parser = argparse.ArgumentParser(
        prog="riverbed",
        description="Operate Riverbed's Redis streams: inspect, tail, dead letters, test events.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    streams = commands.add_parser(
        "streams", parents=[common], help="streams, groups (lag, pending), consumers (idle)"
    )
    streams.add_argument("stream", nargs="*", help="logical streams (default: every one found)")
    streams.set_defaults(run=cmd_streams)

    tail = commands.add_parser("tail", parents=[common], help="the newest events of a stream")
    tail.add_argument("stream", help="logical stream, e.g. email.requested")
    tail.add_argument("-n", "--count", type=int, default=10, help="how many (default 10)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    tail.add_argument("--limit", type=int, help="with --follow: stop after this many events")
    tail.set_defaults(run=cmd_tail)

    dlq = commands.add_parser("dlq", help="dead-lettered entries of a stream")
    actions = dlq.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", parents=[common], help="dead-lettered entries, filtered")
    listing.add_argument("stream")
    listing.add_argument("--limit", type=int, default=100, help="rows shown (default 100)")
    _add_filters(listing)
    listing.set_defaults(run=cmd_dlq_list)

    show = actions.add_parser("show", parents=[common], help="one entry with its event in full")
    show.add_argument("stream")
    show.add_argument("entry_id", help="its id in the dead-letter stream")
    show.set_defaults(run=cmd_dlq_show)

    for name, run, text in (
        ("replay", cmd_dlq_replay, "put entries back onto their stream (same event id)"),
        ("purge", cmd_dlq_purge, "delete entries for good (asks first; --yes does not)"),
    ):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("stream")
        action.add_argument("ids", nargs="*", metavar="ENTRY_ID", help="dead-letter entry ids")
        action.add_argument("--all", action="store_true", help="every entry matching the filters")
        action.add_argument("--dry-run", action="store_true", help="show what would be done")
        if name == "purge":
            action.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        _add_filters(action)
        action.set_defaults(run=run)

    publish = commands.add_parser("publish", parents=[common], help="publish a test event")
    publish.add_argument("type", help=f"event type: {', '.join(REGISTRY)}")
    publish.add_argument(
        "--data", help="payload as JSON, or @file (default: the contract's example)"
    )
    publish.add_argument("--subject", help="CloudEvents subject")
    publish.add_argument("--source", default="urn:riverbed:cli", help="CloudEvents source")
    publish.add_argument("--stream", help="another stream than the type's (tests, staging)")
    publish.add_argument("--count", type=int, default=1, help="events to publish (fresh ids)")
    publish.set_defaults(run=cmd_publish)

    schedules = commands.add_parser("schedules", help="recurring schedules of events")
    verbs = schedules.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = verbs.add_parser("list", parents=[common], help="every schedule, its next fire")
    listing.set_defaults(run=cmd_schedules_list)
    show = verbs.add_parser("show", parents=[common], help="one schedule in full")
    show.add_argument("name")
    show.set_defaults(run=cmd_schedules_show)
    upsert = verbs.add_parser(
        "upsert",
        parents=[common],
        help="create or change a schedule (the same definition again changes nothing)",
    )
    upsert.add_argument("name", help="letters, digits, '.', '_' or '-' (up to 100)")
    rule = upsert.add_mutually_exclusive_group(required=True)
    rule.add_argument("--cron", help="five cron fields, e.g. '0 8 * * *', or @daily, @hourly…")
    rule.add_argument("--every", type=int, metavar="SECONDS", help="a fixed interval, seconds")
    upsert.add_argument("--tz", help="IANA time zone of --cron, e.g. Europe/Berlin (default UTC)")
    upsert.add_argument("--type", required=True, help=f"event type: {', '.join(REGISTRY)}")
    upsert.add_argument("--data", required=True, help="the event's data as JSON, or @file")
    upsert.add_argument("--subject", help="CloudEvents subject of each event")
    upsert.add_argument(
        "--source", help="CloudEvents source (default urn:riverbed:schedule:<name>)"
    )
    upsert.add_argument("--start", help="first possible occurrence, ISO 8601 with an offset")
    upsert.add_argument("--end", help="last possible occurrence, ISO 8601 with an offset")
    upsert.add_argument("--limit", type=int, help="occurrences to publish, then stop")
    upsert.set_defaults(run=cmd_schedules_upsert)
    for verb, text in (
        ("pause", "stop firing until resumed"),
        ("resume", "fire again, from the next occurrence after now (no catch-up)"),
    ):
        action = verbs.add_parser(verb, parents=[common], help=text)
        action.add_argument("name")
        action.set_defaults(run=cmd_schedules_pause)
    remove = verbs.add_parser("remove", parents=[common], help="delete a schedule")
    remove.add_argument("name")
    remove.set_defaults(run=cmd_schedules_remove)
    return parser


Command = Callable[[Redis, argparse.Namespace, Console, Console], Coroutine[Any, Any, int]]


async def _run(
    command: Command, args: argparse.Namespace, settings: RedisSettings, out: Console, err: Console
) -> int:
    redis = connect(settings)
    try:
        return await command(redis, args, out, err)
    finally:
        await redis.aclose()


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run one command; output goes to ``stdout``/``stderr`` (default: the process's)."""
    args = _parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    out = Console(file=stdout, highlight=False, soft_wrap=True)
    err = Console(file=stderr, stderr=stderr is None, highlight=False, soft_wrap=True)

    def fail(message: str, code: int) -> int:
        err.print(f"riverbed: {message}", markup=False)
        return code

    try:
        settings = (
            RedisSettings(url=args.redis_url) if hasattr(args, "redis_url") else RedisSettings()
        )
    except ValidationError as error:
        return fail("invalid Redis URL: " + "; ".join(str(e["msg"]) for e in error.errors()), 2)
    where = redacted_url(settings.url.get_secret_value())
    try:
        return asyncio.run(_run(args.run, args, settings, out, err))
    except UsageError as error:
        return fail(str(error), 2)
    except (RedisError, RedisClusterException) as error:
        return fail(f"Redis at {where} failed: {error}", 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `riverbed tail -f | head`: the reader left
        return 0


if __name__ == "__main__":
    sys.exit(main())
