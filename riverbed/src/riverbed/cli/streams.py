"""``riverbed streams`` and ``riverbed tail``: what streams there are, and what is in one."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.markup import escape

from riverbed import keys
from riverbed.cli.queries import entries, known_stream, logical_streams, stream_info, text
from riverbed.cli.render import consumers_table, event_line, print_json, print_table, streams_table
from riverbed.cli.usage import one_line
from riverbed.connection import Redis
from riverbed_contracts.envelope import EntryDecodeError, event_from_entry


async def cmd_streams(redis: Redis, args: argparse.Namespace, out: Console, err: Console) -> int:
    names = [await known_stream(redis, s) for s in args.stream] or await logical_streams(redis)
    infos = [await stream_info(redis, name) for name in names]
    if args.json:
        print_json(out, {"streams": [asdict(i) for i in infos]})
        return 0
    if not infos:
        out.print("no Riverbed streams in this Redis (keys rb:{<stream>}:stream)")
        return 0
    print_table(out, streams_table(infos))
    consumers = consumers_table(infos)
    if consumers.row_count:
        print_table(out, consumers)
    return 0


def _decoded(entry_id: str, fields: dict[Any, Any]) -> dict[str, Any]:
    """An entry as ``tail`` shows it: its event, or why it is not one and its raw fields."""
    try:
        event = event_from_entry(fields)
    except EntryDecodeError as error:
        return {
            "entry_id": entry_id,
            "error": one_line(str(error)),
            "fields": {text(k): text(v) for k, v in fields.items()},
        }
    return {"entry_id": entry_id, "event": event.model_dump(mode="json", exclude_none=True)}


async def cmd_tail(redis: Redis, args: argparse.Namespace, out: Console, err: Console) -> int:
    key = keys.stream_key(await known_stream(redis, args.stream))
    newest = entries(await redis.xrevrange(key, count=args.count)) if args.count > 0 else []
    if newest:
        last_id = newest[0][0]
    else:  # nothing shown: follow from the stream's current end (or the start of an empty one)
        tip = entries(await redis.xrevrange(key, count=1))
        last_id = tip[0][0] if tip else "0-0"
    shown = 0

    def emit(entry_id: str, fields: dict[Any, Any]) -> None:
        nonlocal shown
        item = _decoded(entry_id, fields)
        if args.json:
            out.file.write(json.dumps(item, ensure_ascii=False) + "\n")
            out.file.flush()
        else:
            out.print(event_line(item), soft_wrap=True)
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
            for entry_id, fields in entries(batch):
                emit(entry_id, fields)
                last_id = entry_id
                if args.limit is not None and shown >= args.limit:
                    break
    return 0
