"""What every benchmark shares: a Redis to run against, events, timing, the output line.

Redis: ``REDIS_URL`` when it is set, else a throwaway ``redis-server`` on a free
loopback port in a temp dir (``riverbed.testing.RedisServer``), stopped at exit.
Either way a benchmark writes only keys of streams it named itself (a random
token in every name) and deletes them when it is done with them.

Output: one line per figure, in the form of docs/conventions.md, so a script can read it:
``bench <name>: <value> <unit>; baseline <baseline-name> <value> <unit>; ratio <x.xx>``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio

from riverbed import eventloop, keys
from riverbed.connection import redacted_url
from riverbed.logging import configure_logging
from riverbed.testing import RedisServer, make_event
from riverbed_contracts import CloudEvent

RawRedis = redis.asyncio.Redis


@contextmanager
def bench_redis() -> Iterator[tuple[str, str]]:
    """Yield (url, description) of the Redis to benchmark against."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured, f"REDIS_URL {redacted_url(configured)}"
        return
    directory = Path(tempfile.mkdtemp(prefix="rb-bench-"))
    server = RedisServer(directory)
    try:
        server.start()
        yield server.url, f"throwaway redis-server on 127.0.0.1:{server.port}"
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def note(text: str) -> None:
    """Context for a human (stderr), kept out of the figure lines on stdout."""
    print(f"# {text}", file=sys.stderr, flush=True)


def bench_line(
    name: str, value: float, unit: str, baseline_name: str, baseline_value: float
) -> str:
    ratio = value / baseline_value if baseline_value else float("nan")
    return (
        f"bench {name}: {value:.0f} {unit}; "
        f"baseline {baseline_name} {baseline_value:.0f} {unit}; ratio {ratio:.2f}"
    )


def ms_line(name: str, value: float, baseline_name: str, baseline_value: float) -> str:
    """The same line for latencies, with two decimals: they are a few ms, ``bench_line``
    would round them to whole ones."""
    ratio = value / baseline_value if baseline_value else float("nan")
    return (
        f"bench {name}: {value:.2f} ms; baseline {baseline_name} {baseline_value:.2f} ms; "
        f"ratio {ratio:.2f}"
    )


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values, ``q`` in [0, 100]; NaN when there are none."""
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def emit(line: str) -> str:
    """Print a figure line on stdout at once (a long run shows each figure as it comes)."""
    print(line, flush=True)
    return line


def unique_stream(label: str) -> str:
    """A logical stream name no one else uses (dotted, as keys.py accepts)."""
    return f"bench.{label}.{uuid.uuid4().hex[:10]}"


def make_events(count: int) -> list[CloudEvent]:
    """``count`` valid ``payment.succeeded.v1`` events, each with its own id."""
    return [make_event(n) for n in range(count)]


async def delete_stream_family(client: RawRedis, stream: str) -> None:
    """Remove every key of one logical stream (stream, idempotency markers, schedule...)."""
    batch: list[bytes] = []
    # braces are not glob characters, so the hash-tagged prefix matches as it is
    pattern = keys.stream_key(stream).removesuffix("stream") + "*"
    async for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await client.unlink(*batch)
            batch.clear()
    if batch:
        await client.unlink(*batch)


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")


async def timed(count: int, work: Callable[[], Awaitable[None]]) -> Rate:
    started = time.perf_counter()
    await work()
    return Rate(count, time.perf_counter() - started)


def best(rates: list[Rate]) -> Rate:
    """The fastest of repeated runs: on a noisy machine it is the least disturbed one."""
    return min(rates, key=lambda r: r.seconds / r.count)


@dataclass(frozen=True)
class Options:
    events: int  # consumed, and published in batches; single publishes are a fifth of it
    repeat: int  # timed rounds per figure; the best is printed
    profile: bool  # cProfile one runtime consume and print its hot spots


def parse_options(description: str, argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--events",
        type=int,
        default=50_000,
        help="events per consume and batched-publish run (default 50000; smaller for a quick run)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="timed rounds per figure, runtime and baseline alternating; the best is printed "
        "(default 3)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="consume: also run the runtime once under cProfile and print its top 25 entries",
    )
    args = parser.parse_args(argv)
    if args.events < 100:
        parser.error(f"--events must be at least 100 (got {args.events})")
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1 (got {args.repeat})")
    return Options(events=args.events, repeat=args.repeat, profile=args.profile)


def quiet_runtime_logs() -> None:
    """The runtime logs its lifecycle at INFO; only warnings belong next to the figures."""
    configure_logging(level="WARNING", fmt="json", service="bench")


def run_alone(description: str, run: Callable[[str, Options], Awaitable[list[str]]]) -> None:
    """``main()`` of one benchmark run by itself: options, a Redis, the service event loop."""
    options = parse_options(description)
    with bench_redis() as (url, where):
        note(f"Redis: {where}; {options.events} events; best of {options.repeat} rounds")
        eventloop.run(run(url, options))


@asynccontextmanager
async def closing_all(*clients: Any) -> AsyncIterator[None]:
    """Close every client (anything with ``aclose()``) when the block ends, however."""
    try:
        yield
    finally:
        for client in clients:
            await client.aclose()
