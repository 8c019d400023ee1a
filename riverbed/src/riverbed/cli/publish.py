"""``riverbed publish``: a test event onto its stream, validated against its contract."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from riverbed import keys
from riverbed.cli.render import print_json
from riverbed.cli.usage import UsageError, checked_stream, event_data, one_line
from riverbed.connection import Redis
from riverbed.publisher import Publisher
from riverbed_contracts import CloudEvent
from riverbed_contracts.registry import UnknownEventType, get_spec


async def cmd_publish(redis: Redis, args: argparse.Namespace, out: Console, err: Console) -> int:
    try:
        spec = get_spec(args.type)
    except UnknownEventType as error:
        raise UsageError(str(error)) from None
    stream = checked_stream(args.stream) if args.stream else spec.stream
    data = event_data(args)
    attributes: dict[str, Any] = {"source": args.source}
    if args.subject:
        attributes["subject"] = args.subject
    events = [CloudEvent(type=spec.type, data=data, **attributes) for _ in range(args.count)]
    try:
        entry_ids = await Publisher(redis).publish_many(events, stream=stream)
    except ValidationError as error:
        raise UsageError(f"--data does not fit {spec.type}: {one_line(str(error))}") from None
    published = [
        {"event_id": e.id, "type": e.type, "stream": stream, "entry_id": i}
        for e, i in zip(events, entry_ids, strict=True)
    ]
    if args.json:
        print_json(out, {"published": published})
    else:
        for item in published:
            out.print(
                f"published {item['type']} {item['event_id']} as {item['entry_id']} "
                f"on {escape(keys.stream_key(stream))}"
            )
    return 0
