"""What the operator typed, checked and turned into values; a mistake is a :class:`UsageError`.

A usage error ends the command with exit code 2 and its message alone, so every check here
says what was wrong and what to give instead.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from riverbed import keys
from riverbed.entry_ids import is_entry_id
from riverbed.errors import RiverbedError
from riverbed_contracts.registry import get_spec


class UsageError(RiverbedError):
    """Something the operator asked that cannot be done as asked; the message says why."""


def one_line(message: str) -> str:
    """A validation error's lines joined, without pydantic's link to its docs."""
    lines = (line.strip() for line in message.splitlines())
    return "; ".join(line for line in lines if line and not line.startswith("For further"))


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


def checked_entry_id(entry_id: str) -> str:
    """``entry_id`` if it is a whole stream entry id, else a usage error saying where ids are."""
    if not is_entry_id(entry_id):
        raise UsageError(
            f"{entry_id!r} is not a stream entry id: give <ms>-<seq>, as 'riverbed dlq list' shows"
        )
    return entry_id


def checked_stream(stream: str) -> str:
    """``stream`` if it can name a logical stream (its key can be built), else a usage error."""
    try:
        keys.stream_key(stream)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return stream


def _example(event_type: str) -> dict[str, Any]:
    schema = get_spec(event_type).model.model_json_schema()
    examples = schema.get("examples") or []
    if not examples:
        raise UsageError(f"{event_type} has no example in its contract; give --data")
    example: dict[str, Any] = examples[0]
    return example


def event_data(args: argparse.Namespace) -> dict[str, Any]:
    """The event data ``--data`` gives (JSON, or ``@file``); without it the contract's example."""
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
