"""Dead-lettered entries as the CLI reads them: the entry, the filters, the scans of Redis.

The consumer writes one entry to ``rb:{<stream>}:dlq`` per event it gives up on; its id is
when that happened (XADD ``*``), so the time filters bound the XRANGE instead of reading
everything.
"""

from __future__ import annotations

import argparse
import fnmatch
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from riverbed import keys
from riverbed.cli.queries import entries, group_names, known_stream, text
from riverbed.cli.render import iso
from riverbed.cli.usage import UsageError, checked_entry_id, one_line, parse_when
from riverbed.connection import Redis
from riverbed.entry_ids import id_ms
from riverbed_contracts import CloudEvent
from riverbed_contracts.envelope import ENTRY_FIELD, EntryDecodeError, event_from_entry

#: entries read per XRANGE round trip when scanning a dead-letter stream
PAGE = 500


@dataclass
class DeadLetter:
    """One entry of ``rb:{<stream>}:dlq``, as the consumer wrote it."""

    dlq_id: str
    fields: dict[str, str]
    event: CloudEvent | None
    decode_error: str | None

    @classmethod
    def of(cls, entry_id: Any, raw: dict[Any, Any]) -> DeadLetter:
        fields = {text(k): text(v) for k, v in raw.items()}
        try:
            event: CloudEvent | None = event_from_entry(raw)
            error = None
        except EntryDecodeError as problem:
            event, error = None, one_line(str(problem))
        return cls(text(entry_id), fields, event, error)

    @property
    def type(self) -> str:
        return self.event.type if self.event else "?"

    @property
    def dead_lettered_ms(self) -> int:
        """When it was dead-lettered, by Redis's clock: the time part of its entry id."""
        return id_ms(self.dlq_id)

    def as_json(self) -> dict[str, Any]:
        fields = {k: v for k, v in self.fields.items() if k != ENTRY_FIELD}
        return {
            "dlq_id": self.dlq_id,
            "dead_lettered_at": iso(self.dead_lettered_ms),
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
        page = entries(await redis.xrange(key, min=start, max=end, count=PAGE))
        for entry_id, raw in page:
            entry = DeadLetter.of(entry_id, raw)
            if filters.match(entry):
                yield entry
        if len(page) < PAGE:
            return
        start = "(" + page[-1][0]  # exclusive start, Redis >= 6.2


async def dead_letter(redis: Redis, stream: str, entry_id: str) -> DeadLetter:
    """The entry ``entry_id`` of the stream's dead letters; a usage error if it is not there."""
    key = keys.dead_letter_key(stream)
    wanted = checked_entry_id(entry_id)
    page = entries(await redis.xrange(key, min=wanted, max=wanted))
    if not page:
        raise UsageError(f"no entry {wanted} in {key}")
    return DeadLetter.of(page[0][0], page[0][1])


async def selected(redis: Redis, args: argparse.Namespace) -> list[DeadLetter]:
    """The entries a replay or purge acts on: the ids given, or --all that match the filters."""
    stream = await known_stream(redis, args.stream)
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
    found: list[DeadLetter] = []
    for wanted in args.ids:
        entry = await dead_letter(redis, stream, wanted)
        if filters.match(entry):
            found.append(entry)
    return found


async def other_groups(redis: Redis, stream: str, replayed: Sequence[DeadLetter]) -> list[str]:
    """Groups of the stream that a replay reaches besides the one each entry failed in: only
    entries dead-lettered without a group go to every group."""
    key = keys.stream_key(stream)
    if not await redis.exists(key) or all(e.fields.get("group") for e in replayed):
        return []
    failed_in = {e.fields.get("group") for e in replayed}
    return sorted(name for name in await group_names(redis, stream) if name not in failed_in)
