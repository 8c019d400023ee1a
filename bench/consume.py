"""Consume throughput: the reliable runtime versus a raw redis-py loop, in the same run.

Both sides read the same kind of entries (``payment.succeeded.v1`` CloudEvents,
written by the publisher's batch path before the clock starts) from a fresh
stream with a consumer group created up front.

- runtime: :class:`riverbed.consumer.StreamConsumer` with every reliability
  feature on (idempotency markers written with the acknowledgement, keep-alive,
  reclaim loop, default concurrency), ``batch_size`` 100 and a no-op async
  handler. Done when the handler has seen every event and the group's pending
  list is empty, i.e. every entry is acknowledged.
- baseline ``raw-xreadgroup-xack``: ``XREADGROUP COUNT 100`` then one ``XACK`` of
  that batch, in a loop, until every entry is acknowledged.

Run alone: ``uv run --frozen python bench/consume.py [--events N] [--repeat R] [--profile]``.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import io
import pstats
import sys
import time
from typing import Any

from _common import (
    Options,
    Rate,
    RawRedis,
    bench_line,
    best,
    closing_all,
    delete_stream_family,
    emit,
    make_events,
    note,
    quiet_runtime_logs,
    run_alone,
    unique_stream,
)

from riverbed import keys
from riverbed.connection import connect
from riverbed.consumer import Message, StreamConsumer, Subscription
from riverbed.publisher import Publisher
from riverbed.settings import ConsumerSettings, RedisSettings
from riverbed_contracts import CloudEvent, event_from_entry
from riverbed_contracts.registry import validate_data

GROUP = "bench"
READ_COUNT = 100  # entries per XREADGROUP, both sides
FILL_BATCH = 1_000  # events per publish_many while pre-filling (not timed)
WARM_UP_EVENTS = 2_000
PROFILE_TOP = 25


async def _fill(publisher: Publisher, stream: str, events: list[CloudEvent]) -> None:
    for start in range(0, len(events), FILL_BATCH):
        await publisher.publish_many(events[start : start + FILL_BATCH], stream=stream)


async def _fresh_stream(
    publisher: Publisher, monitor: RawRedis, label: str, events: list[CloudEvent]
) -> tuple[str, str]:
    """A new stream holding ``events``, with the group already created; (stream, key)."""
    stream = unique_stream(label)
    key = keys.stream_key(stream)
    await _fill(publisher, stream, events)
    await monitor.xgroup_create(key, GROUP, id="0")
    gc.collect()  # so that a collection of the fill's garbage does not land in the timing
    return stream, key


def _timeout_s(count: int) -> float:
    return 120.0 + count / 1_000  # s: far beyond any plausible run; only a hang reaches it


async def runtime_consume(
    client: RawRedis,
    monitor: RawRedis,
    events: list[CloudEvent],
    profiler: cProfile.Profile | None = None,
) -> Rate:
    publisher = Publisher(client)
    stream, key = await _fresh_stream(publisher, monitor, "consume.runtime", events)
    total = len(events)
    handled = 0
    all_handled = asyncio.Event()

    async def handler(message: Message[Any]) -> None:
        nonlocal handled
        handled += 1
        if handled == total:
            all_handled.set()

    consumer = StreamConsumer(
        client,
        Subscription(stream=stream, group=GROUP, handler=handler),  # idempotent by default
        settings=ConsumerSettings(batch_size=READ_COUNT),
        consumer_name="bench-runtime",
        service="bench",
    )
    if profiler is not None:
        profiler.enable()
    started = time.perf_counter()
    main = consumer.start()
    try:
        waiter = asyncio.ensure_future(all_handled.wait())
        finished, _ = await asyncio.wait(
            {waiter, main}, timeout=_timeout_s(total), return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        if waiter not in finished:
            if main in finished:
                main.result()  # raises what stopped the consumer
            raise RuntimeError(f"runtime consumer handled {handled} of {total} events in time")
        # handled is not acknowledged yet: wait until the group holds nothing pending
        while (await monitor.xpending(key, GROUP))["pending"]:
            if time.perf_counter() - started > _timeout_s(total):
                raise RuntimeError("runtime consumer did not acknowledge every event in time")
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - started
    finally:
        if profiler is not None:
            profiler.disable()
        consumer.stop()
        await main
        await delete_stream_family(monitor, stream)
    return Rate(total, elapsed)


async def raw_consume(
    client: RawRedis, monitor: RawRedis, events: list[CloudEvent], *, decode: bool = False
) -> Rate:
    """XREADGROUP COUNT 100 + one XACK per batch; with ``decode``, also parse and validate
    every event as the runtime must (the part of the runtime's cost no design avoids)."""
    publisher = Publisher(monitor)
    stream, key = await _fresh_stream(publisher, monitor, "consume.raw", events)
    total = len(events)
    try:
        started = time.perf_counter()
        acknowledged = 0
        while acknowledged < total:
            reply = await client.xreadgroup(GROUP, "bench-raw", {key: ">"}, count=READ_COUNT)
            if not reply:
                raise RuntimeError(f"raw loop found the stream empty after {acknowledged}")
            entry_ids = [entry_id for entry_id, _fields in reply[0][1]]
            if decode:
                for _entry_id, fields in reply[0][1]:
                    validate_data(event_from_entry(fields))
            acknowledged += await client.xack(key, GROUP, *entry_ids)
        elapsed = time.perf_counter() - started
    finally:
        await delete_stream_family(monitor, stream)
    return Rate(total, elapsed)


def _profile_report(profiler: cProfile.Profile) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats(pstats.SortKey.CUMULATIVE).print_stats(PROFILE_TOP)
    out.write(f"# top {PROFILE_TOP} by own time (tottime)\n")
    stats.sort_stats(pstats.SortKey.TIME).print_stats(PROFILE_TOP)
    return out.getvalue()


async def run(url: str, options: Options) -> list[str]:
    """Warm up, time ``options.repeat`` alternating rounds, print and return the figure line."""
    quiet_runtime_logs()
    client = connect(RedisSettings(url=url))  # the runtime's own client, as services get it
    raw_client = RawRedis.from_url(url)
    monitor = RawRedis.from_url(url)  # setup, polling, cleanup: off both timed clients
    async with closing_all(client, raw_client, monitor):
        events = make_events(options.events)
        warm = events[: min(WARM_UP_EVENTS, len(events))]
        await runtime_consume(client, monitor, warm)
        await raw_consume(raw_client, monitor, warm)
        runtime: list[Rate] = []
        raw: list[Rate] = []
        decoding: list[Rate] = []
        for round_ in range(options.repeat):
            # alternate which side goes first, so drift on a noisy machine hits both
            if round_ % 2:
                runtime.append(await runtime_consume(client, monitor, events))
                raw.append(await raw_consume(raw_client, monitor, events))
                decoding.append(await raw_consume(raw_client, monitor, events, decode=True))
            else:
                decoding.append(await raw_consume(raw_client, monitor, events, decode=True))
                raw.append(await raw_consume(raw_client, monitor, events))
                runtime.append(await runtime_consume(client, monitor, events))
        line = emit(
            bench_line(
                "consume-runtime",
                best(runtime).per_second,
                "events/s",
                "raw-xreadgroup-xack",
                best(raw).per_second,
            )
        )
        decoding_line = emit(
            bench_line(
                "consume-runtime-vs-decoding-loop",
                best(runtime).per_second,
                "events/s",
                "raw-xreadgroup-decode-validate-xack",
                best(decoding).per_second,
            )
        )
        if options.profile:
            profiler = cProfile.Profile()
            profiled = await runtime_consume(client, monitor, events, profiler)
            note(
                f"cProfile of one runtime consume of {profiled.count} events "
                f"({profiled.per_second:.0f} events/s under the profiler):"
            )
            print(_profile_report(profiler), file=sys.stderr, flush=True)
        elif best(runtime).per_second < 0.5 * best(raw).per_second:
            note("runtime consume is below half the raw loop: rerun with --profile for hot spots")
        return [line, decoding_line]


if __name__ == "__main__":
    run_alone(__doc__.splitlines()[0], run)
