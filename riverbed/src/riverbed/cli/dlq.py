"""``riverbed dlq list|show|replay|purge``: look at dead-lettered entries, put back or delete.

Replay moves an entry back onto its stream with the runtime's replay script, so an entry
two operators replay at once is replayed once; purge deletes only after the operator typed
the stream's name (or gave ``--yes``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape

from riverbed import keys, scripts
from riverbed.cli.dead_letters import (
    PAGE,
    DeadLetter,
    Filters,
    dead_letter,
    dead_letters,
    other_groups,
    selected,
)
from riverbed.cli.queries import known_stream, text
from riverbed.cli.render import dead_letter_table, print_json, print_table
from riverbed.connection import Redis


async def cmd_dlq_list(redis: Redis, args: argparse.Namespace, out: Console, err: Console) -> int:
    stream = await known_stream(redis, args.stream)
    shown: list[DeadLetter] = []
    total = 0
    async for entry in dead_letters(redis, stream, Filters.from_args(args)):
        total += 1
        if len(shown) < args.limit:
            shown.append(entry)
    key = keys.dead_letter_key(stream)
    if args.json:
        print_json(
            out,
            {
                "stream": stream,
                "dead_letter_key": key,
                "matched": total,
                "entries": [e.as_json() for e in shown],
            },
        )
        return 0
    if not total:
        out.print(f"no matching entries in {escape(key)}")
        return 0
    print_table(out, dead_letter_table(f"{key}: {total} matching", shown))
    if total > len(shown):
        out.print(f"showing the oldest {len(shown)} of {total}; --limit shows more")
    return 0


async def cmd_dlq_show(redis: Redis, args: argparse.Namespace, out: Console, err: Console) -> int:
    stream = await known_stream(redis, args.stream)
    document = (await dead_letter(redis, stream, args.entry_id)).as_json()
    if args.json:
        print_json(out, document)
    else:
        out.print_json(data=document)
    return 0


async def _replay(
    redis: Redis, stream: str, replayable: Sequence[DeadLetter]
) -> tuple[list[dict[str, str]], list[str]]:
    """Each entry back onto the stream: (what was replayed, ids no longer there to replay)."""
    replayed: list[dict[str, str]] = []
    vanished: list[str] = []
    stream_key, dlq_key = keys.stream_key(stream), keys.dead_letter_key(stream)
    for entry in replayable:
        # moves the entry back onto its stream if it is still there (atomic)
        new_id = await scripts.REPLAY_DEAD_LETTER(
            redis, keys=[stream_key, dlq_key], args=[entry.dlq_id]
        )
        if new_id is None:
            vanished.append(entry.dlq_id)  # replayed or purged by someone else meanwhile
            continue
        assert entry.event is not None
        replayed.append(
            {"dlq_id": entry.dlq_id, "entry_id": text(new_id), "event_id": entry.event.id}
        )
    return replayed, vanished


def _print_replay(
    out: Console,
    report: dict[str, Any],
    replayable: Sequence[DeadLetter],
    skipped: Sequence[DeadLetter],
) -> None:
    """The replay ``report`` for a person: what moved, what could not, who else sees it."""
    stream, others = report["stream"], report["other_groups"]
    if report["dry_run"]:
        print_table(out, dead_letter_table(f"dry run: would replay {len(replayable)}", replayable))
    else:
        out.print(
            f"replayed {len(report['replayed'])} of {report['matched']} "
            f"onto {keys.stream_key(stream)}"
        )
        for item in report["replayed"]:
            out.print(f"  {item['dlq_id']} -> {item['entry_id']} (event {item['event_id']})")
    for entry in skipped:
        out.print(
            f"[yellow]skipped {entry.dlq_id}: not a CloudEvent, cannot be replayed "
            f"({escape(entry.decode_error or '')}); inspect it with 'riverbed dlq show', "
            "then purge it[/]"
        )
    for dlq_id in report["already_gone"]:
        out.print(f"[yellow]{dlq_id} was no longer in the dead-letter stream[/]")
    if others and replayable:
        out.print(
            f"note: groups {', '.join(others)} also read {stream}; they skip an event id they "
            "handled within their idempotency window (RIVERBED_CONSUMER_IDEMPOTENCY_TTL_S)"
        )


async def cmd_dlq_replay(redis: Redis, args: argparse.Namespace, out: Console, err: Console) -> int:
    stream = await known_stream(redis, args.stream)
    entries = await selected(redis, args)
    replayable = [e for e in entries if e.event is not None]
    skipped = [e for e in entries if e.event is None]
    others = await other_groups(redis, stream, replayable)
    replayed, vanished = ([], []) if args.dry_run else await _replay(redis, stream, replayable)
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
        print_json(out, report)
    else:
        _print_replay(out, report, replayable, skipped)
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
    stream = await known_stream(redis, args.stream)
    entries = await selected(redis, args)
    ids = [e.dlq_id for e in entries]
    if args.dry_run or not ids:
        if args.json:
            print_json(out, {"stream": stream, "dry_run": args.dry_run, "would_delete": ids})
        elif ids:
            print_table(out, dead_letter_table(f"dry run: would delete {len(ids)}", entries))
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
        print_json(out, {"stream": stream, "dry_run": False, "deleted": deleted, "ids": ids})
    else:
        out.print(f"deleted {deleted} entr{'y' if deleted == 1 else 'ies'} from {escape(key)}")
    return 0
