"""How the CLI shows things: rich tables on a terminal, tab-separated lines elsewhere, JSON.

Tables are built here from the query results; the commands decide which to print.
``--json`` output bypasses rich entirely so that a script reads exactly one document.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from riverbed.cli.dead_letters import DeadLetter
    from riverbed.cli.queries import StreamInfo


def print_json(out: Console, document: Any) -> None:
    """One JSON document on the command's output, untouched by rich's markup and wrapping."""
    out.file.write(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")
    out.file.flush()


def print_table(out: Console, table: Table) -> None:
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


def iso(ms: int) -> str:
    """Milliseconds since the epoch as an ISO 8601 UTC time, to the second."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def duration(seconds: float | None) -> str:
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


def days(ms: int) -> str:
    """A retention in milliseconds as days: ``7d``, ``0.5d``."""
    return f"{ms / 86_400_000:g}d"


def streams_table(infos: Sequence[StreamInfo]) -> Table:
    """One row per group of each stream (one row for a stream no group reads)."""
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
                "-" if age is None else duration(age),
                str(group.retries_waiting),
                str(len(group.consumers)),
                retention,
            )
    return table


def consumers_table(infos: Sequence[StreamInfo]) -> Table:
    """Every consumer of every group: what it holds and how long it has been quiet."""
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
                    duration(c.idle_ms / 1000),
                    "-" if c.inactive_ms is None else duration(c.inactive_ms / 1000),
                )
    return consumers


def event_line(item: dict[str, Any]) -> str:
    """One stream entry (as ``riverbed tail`` decodes it) on one line of rich markup."""
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


def dead_letter_table(title: str, entries: Sequence[DeadLetter]) -> Table:
    """Dead-lettered entries: what failed, where, how often, and the error (cut at 200)."""
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
            iso(entry.dead_lettered_ms),
            escape(entry.type),
            escape(entry.event.id if entry.event else "-"),
            escape(entry.fields.get("reason", "")),
            escape(entry.fields.get("attempts", "")),
            escape(entry.fields.get("group", "")),
            escape(error[:200]),
        )
    return table
