"""``make bench-peers``: Riverbed, BullMQ and FastStream under one protocol, in one run.

Same Redis (``REDIS_URL``, else a throwaway ``redis-server`` on loopback), same ~300-byte
JSON events, producer and worker in separate OS processes, three phases (enqueue, drain,
end-to-end; ``protocol.py``), each peer with its documented best settings for throughput
and with its defaults. Prints one bench line per figure (Riverbed's value, the peer's as
the baseline, their ratio), the goals of issue #16 as met/not met on stderr, and writes
``bench/results/peers.md``. The peers are installed under ``var/bench-peers/`` at pinned
versions (``install.py``); a peer that cannot be installed is skipped, saying why.

    uv run --frozen python bench/peers/run.py [--events N] [--repeat R] [--latest]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from importlib import metadata
from pathlib import Path

import install
import redis
import report
from install import Peer
from protocol import Figures, Protocol

sys.path.insert(0, str(install.HERE.parent))  # bench/, for what every benchmark shares
from _common import bench_redis, note

from riverbed.testing import make_event

RESULTS = install.HERE.parent / "results" / "peers.md"
WARM_UP_EVENTS = 1_000


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per phase (20000)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds; the best of each figure is kept (3)"
    )
    parser.add_argument(
        "--latest",
        action="store_true",
        help="install the newest BullMQ < 7 and FastStream < 1 instead of the pinned versions",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave bench/results/peers.md as is"
    )
    args = parser.parse_args(argv)
    if args.events < 1_000 or args.repeat < 1:
        parser.error("--events must be at least 1000 and --repeat at least 1")
    return args


def riverbed_peer() -> Peer:
    root = install.ROOT
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--", "riverbed", "contracts"],
        cwd=root,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return Peer(
        "riverbed",
        command=[sys.executable, str(install.HERE / "riverbed_side.py")],
        versions={
            "Riverbed": f"`{revision}`" + (" plus uncommitted runtime changes" if changed else ""),
            "Python": platform.python_version(),
            "redis-py": metadata.version("redis"),
            "hiredis": metadata.version("hiredis"),
            "uvloop": metadata.version("uvloop"),
        },
    )


def write_events(folder: Path, count: int) -> Path:
    """The timed events, then the warm-up ones: CloudEvents JSON, one a line, each its own id."""
    path = folder / "events.jsonl"
    path.write_text("\n".join(make_event(n).to_json() for n in range(count)) + "\n")
    return path


def measure(protocol: Protocol, peers: list[Peer], repeat: int) -> report.Results:
    token = uuid.uuid4().hex[:10]
    results: report.Results = {}
    for round_ in range(repeat):
        order = peers[round_ % len(peers) :] + peers[: round_ % len(peers)]
        for settings in report.SETTINGS:
            for peer in order:
                name = f"bench.peers.{token}.{peer.name}.{settings}.r{round_}"
                started = time.monotonic()
                try:
                    figures = protocol.run(peer, settings, name)
                finally:
                    protocol.delete_keys(name)
                note(
                    f"{peer.name} {settings}: enqueue {figures.enqueue:,.0f}, drain "
                    f"{figures.drain:,.0f}, end-to-end {figures.end_to_end:,.0f} events/s "
                    f"({time.monotonic() - started:.0f} s)"
                )
                kept = results.get((peer.name, settings))
                results[(peer.name, settings)] = (
                    figures
                    if kept is None
                    else Figures(
                        max(kept.enqueue, figures.enqueue),
                        max(kept.drain, figures.drain),
                        max(kept.end_to_end, figures.end_to_end),
                    )
                )
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    peers = [riverbed_peer(), install.bullmq(args.latest), install.faststream(args.latest)]
    skipped = [f"{peer.name}: {peer.skipped}" for peer in peers if peer.skipped]
    for reason in skipped:
        note(f"skipped {reason}")
    ready = [peer for peer in peers if not peer.skipped]
    versions = {name: v for peer in ready for name, v in peer.versions.items()}
    note("versions: " + "; ".join(f"{name} {v}" for name, v in versions.items()))
    with bench_redis() as (url, where), tempfile.TemporaryDirectory() as folder:
        server = redis.Redis.from_url(url).info("server")["redis_version"]
        versions["Redis server"] = str(server)
        note(f"Redis: {where} ({server}); {args.events} events per phase, {args.repeat} round(s)")
        events = write_events(Path(folder), args.events + WARM_UP_EVENTS)
        protocol = Protocol(url, events, args.events, WARM_UP_EVENTS)
        results = measure(protocol, ready, args.repeat)
    for line in report.bench_lines(results):
        print(line, flush=True)
    for line in report.goal_notes(results):
        note(line)
    context = [
        f"{args.events:,} events of ~300 bytes (a `payment.succeeded.v1` CloudEvent's JSON) per "
        f"phase, best of {args.repeat} round(s); {where.split(' on ')[0]}, Redis {server}; "
        "producer and worker in separate processes; see bench/README.md for the protocol. "
        f"1-minute load average {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} "
        "after it (on a shared machine, other work moves the figures).",
    ]
    if not args.no_write:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(report.markdown(results, versions, context, skipped))
        note(f"wrote {RESULTS.relative_to(install.ROOT)}")
    note(f"bench-peers took {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
