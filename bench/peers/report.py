"""The peer table: bench lines on stdout, goals on stderr, ``bench/results/peers.md``."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

from protocol import Figures

PHASES = (("enqueue", "enqueue"), ("drain", "drain"), ("e2e", "end_to_end"))
SETTINGS = ("best", "defaults")
PEERS = (("bullmq", "BullMQ"), ("faststream", "FastStream"))
TITLES = {"enqueue": "enqueue", "drain": "drain", "e2e": "end-to-end"}
HOW = {
    "best": "Riverbed `publish_many` x1,000, `StreamConsumer` defaults · BullMQ `addBulk` "
    "x1,000, concurrency 50 · FastStream pipelined `publish` x1,000, batch subscriber "
    "(`max_records` 100)",
    "defaults": "Riverbed `publish` one at a time, `StreamConsumer` defaults · BullMQ "
    "`add` one at a time, concurrency 1 · FastStream `publish` one at a time, plain "
    "stream subscriber",
}
#: (what, Riverbed's figure, the peer's, the least ratio the issue (#16) asks for)
GOALS = (
    ("drain ≥ 2.5x BullMQ's best drain", ("best", "drain"), ("bullmq", "best"), 2.5),
    ("drain ≥ 1.3x FastStream's batch drain", ("best", "drain"), ("faststream", "best"), 1.3),
)

Results = dict[tuple[str, str], Figures]  # (peer, settings) -> figures


def value(results: Results, peer: str, settings: str, phase: str) -> float | None:
    figures = results.get((peer, settings))
    return None if figures is None else float(getattr(figures, dict(PHASES)[phase]))


def bench_lines(results: Results) -> list[str]:
    lines = []
    for phase, _ in PHASES:
        for settings in SETTINGS:
            ours = value(results, "riverbed", settings, phase)
            for peer, title in PEERS:
                theirs = value(results, peer, settings, phase)
                if ours is None or theirs is None:
                    continue
                lines.append(
                    f"bench peers-{phase}-{peer}-{settings}: {ours:.0f} events/s; "
                    f"baseline {title.lower()} {theirs:.0f} events/s; ratio {ours / theirs:.2f}"
                )
    return lines


def goal_notes(results: Results) -> list[str]:
    notes = []
    for what, (settings, phase), (peer, peer_settings), least in GOALS:
        ours = value(results, "riverbed", settings, phase)
        theirs = value(results, peer, peer_settings, phase)
        if ours is None or theirs is None:
            notes.append(f"goal {what}: not measured ({peer} skipped)")
            continue
        ratio = ours / theirs
        verdict = "met" if ratio >= least else "not met"
        notes.append(f"goal {what}: {verdict} ({ours:.0f} vs {theirs:.0f} events/s, {ratio:.2f}x)")
    return notes


def machine() -> str:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = os.cpu_count() or 0
    named = f" ({model})" if model else ""
    return f"{cores} cores{named}, {platform.system()} {platform.release()}"


def _cell(number: float | None) -> str:
    return "skipped" if number is None else f"{number:,.0f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    return "-" if ours is None or theirs is None else f"**{ours / theirs:.2f}x**"


def table(results: Results) -> list[str]:
    rows = [
        "| phase | settings | Riverbed | BullMQ | Riverbed ÷ BullMQ | FastStream "
        "| Riverbed ÷ FastStream |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for phase, _ in PHASES:
        for settings in SETTINGS:
            ours = value(results, "riverbed", settings, phase)
            cells = [_cell(ours)]
            for peer, _title in PEERS:
                theirs = value(results, peer, settings, phase)
                cells += [_cell(theirs), _ratio(ours, theirs)]
            rows.append(f"| {TITLES[phase]} | {settings} | {' | '.join(cells)} |")
    return rows


def markdown(
    results: Results, versions: dict[str, str], context: list[str], skipped: list[str]
) -> str:
    now = datetime.datetime.now(datetime.UTC)
    lines = [
        "# Riverbed against its peers (`make bench-peers`)",
        "",
        f"Run on {now:%Y-%m-%d at %H:%M} UTC; machine: {machine()}.",
        "",
        *context,
        "",
        "Events/s (higher is better); each peer's ratio is Riverbed's figure over the peer's.",
        "",
        *table(results),
        "",
        *(f"- **{settings}**: {HOW[settings]}" for settings in SETTINGS),
        "",
        "Goals (issue #16):",
        "",
        *(f"- {note}" for note in goal_notes(results)),
        *(["", *(f"Skipped: {reason}" for reason in skipped)] if skipped else []),
        "",
        "Versions: " + "; ".join(f"{name} {version}" for name, version in versions.items()) + ".",
        "",
    ]
    return "\n".join(lines)
