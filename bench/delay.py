"""The delay store: promotion speed, memory with parked retries, lateness of delayed events.

Each figure has its baseline measured in the same run:

- ``promote``: ``DelayStore.promote_due(batch=1000)`` in a loop until the store is empty,
  of twice ``--events`` events (100,000 by default) that were scheduled through
  ``DelayStore.schedule`` with a due time already past (not timed); baseline
  ``publish-many``: ``Publisher.publish_many`` of the same events in batches of 1,000 into
  a fresh stream. Goal: ratio ≥ 0.7.
- ``memory-retries``: Redis ``used_memory`` once a real ``StreamConsumer`` has consumed
  four times ``--events`` events (200,000 by default), 1 % of them failing with
  ``RetryLater(delay_ms=3_600_000)`` (parked in the delay store for an hour), and retention
  has caught up (``StreamMonitor.trim_acknowledged`` until it trims nothing); baseline
  ``memory-no-retries``: the same run where every event succeeds. Each run has a
  ``redis-server`` of its own, and the figure is what it uses over its own empty start
  (KiB). Goal: ratio ≤ 1.2.
- ``delayed-lateness-p50``, ``-p99``: a tenth of ``--events`` events (5,000 by default)
  published for later with ``Publisher.publish_later``, due times spread over
  ``SPREAD_MS``, handled by a ``StreamConsumer`` with the default settings; lateness is
  handler start minus due time (ms). Baseline ``raw-timer-xadd-xreadgroup``: the same
  events appended at their due times by an asyncio timer (one pipelined ``XADD`` per due
  time) and read by a plain ``XREADGROUP BLOCK`` loop: the lateness of a perfect in-process
  timer, i.e. what the delivery itself costs. Above 1 is later.

Run alone: ``uv run --frozen python bench/delay.py [--events N] [--repeat R]``.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
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
    ms_line,
    note,
    percentile,
    quiet_runtime_logs,
    run_alone,
    unique_stream,
)

from riverbed import keys
from riverbed.connection import Redis, connect
from riverbed.consumer import Message, StreamConsumer, Subscription
from riverbed.delay import DelayStore
from riverbed.errors import RetryLater
from riverbed.monitor import StreamMonitor
from riverbed.publisher import Publisher
from riverbed.settings import ConsumerSettings, RedisSettings
from riverbed.testing import RedisServer
from riverbed_contracts import CloudEvent

GROUP = "bench"
BATCH = 1_000  # items per promote_due and events per publish_many / schedule call
WARM_UP_EVENTS = 2_000
GOAL_PROMOTE_RATIO = 0.7  # promote events/s over publish_many events/s, at least
GOAL_MEMORY_RATIO = 1.2  # used memory with 1 % retries over none, at most
FAIL_EVERY = 100  # every 100th event fails: 1 %
RETRY_DELAY_MS = 3_600_000  # one hour: the retries are still parked when memory is read
LEAD_MS = 1_000  # from scheduling to the first due time: scheduling is done by then
SPREAD_MS = 5_000  # due times spread over this many ms after the lead
SLOTS = 100  # distinct due times (every SPREAD_MS / SLOTS = 50 ms)
STUCK_S = 120.0  # s; far beyond any plausible run, only a hang reaches it


def _chunks(items: Sequence[CloudEvent], size: int) -> list[Sequence[CloudEvent]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _now_ms() -> float:
    return time.time() * 1000


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` every ms until true; fail after ``STUCK_S``."""
    deadline = time.monotonic() + STUCK_S
    while not await condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


# -- promote -----------------------------------------------------------------------------


async def promote_round(client: Redis, monitor: RawRedis, events: list[CloudEvent]) -> Rate:
    """Promote ``events``, all already due, from a fresh delay store onto its stream."""
    stream = unique_stream("delay.promote")
    store = DelayStore(client, stream)
    due_ms = int(_now_ms()) - 1  # due already: only promotion is timed
    try:
        for chunk in _chunks(events, BATCH):
            await store.schedule(chunk, due_ms)
        gc.collect()  # so that a collection of the scheduling's garbage is not timed
        promoted = 0
        started = time.perf_counter()
        while True:
            promotion = await store.promote_due(batch=BATCH)
            promoted += promotion.promoted
            if promotion.next_due_ms is None:  # the store is empty
                break
        elapsed = time.perf_counter() - started
        length = await monitor.xlen(keys.stream_key(stream))
        if promoted != len(events) or length != len(events):
            raise RuntimeError(f"promoted {promoted}, stream holds {length}, of {len(events)}")
    finally:
        await delete_stream_family(monitor, stream)
    return Rate(len(events), elapsed)


async def publish_many_round(client: Redis, monitor: RawRedis, events: list[CloudEvent]) -> Rate:
    """Publish ``events`` with ``Publisher.publish_many`` in batches of ``BATCH``."""
    stream = unique_stream("delay.publish")
    publisher = Publisher(client)
    chunks = _chunks(events, BATCH)
    gc.collect()
    try:
        started = time.perf_counter()
        for chunk in chunks:
            await publisher.publish_many(chunk, stream=stream)
        elapsed = time.perf_counter() - started
    finally:
        await delete_stream_family(monitor, stream)
    return Rate(len(events), elapsed)


async def bench_promote(client: Redis, monitor: RawRedis, options: Options) -> list[str]:
    events = make_events(options.events * 2)
    warm = events[:WARM_UP_EVENTS]
    await promote_round(client, monitor, warm)
    await publish_many_round(client, monitor, warm)
    promote: list[Rate] = []
    publish: list[Rate] = []
    for round_ in range(options.repeat):
        # alternate which side goes first, so drift on a noisy machine hits both
        order = [(promote_round, promote), (publish_many_round, publish)]
        for side, rates in order if round_ % 2 else reversed(order):
            rates.append(await side(client, monitor, events))
    ratio = best(promote).per_second / best(publish).per_second
    note(
        f"promote: {len(events)} due events, batches of {BATCH}; goal ratio ≥ "
        f"{GOAL_PROMOTE_RATIO} {'met' if ratio >= GOAL_PROMOTE_RATIO else 'MISSED'}"
    )
    line = bench_line(
        "promote",
        best(promote).per_second,
        "events/s",
        "publish-many",
        best(publish).per_second,
    )
    return [emit(line)]


# -- memory with retries --------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    used_bytes: int  # used_memory over the empty server's
    stream_length: int  # entries left after retention
    keys_bytes: dict[str, int]  # MEMORY USAGE of each key of the stream, by key suffix
    after_one_pass_bytes: int  # used_memory over the empty server's after one retention pass
    trimming_passes: int  # retention passes that trimmed something


async def _used_memory(client: RawRedis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def memory_round(events: list[CloudEvent], *, fail_every: int | None) -> Memory:
    """Consume ``events`` on a Redis of its own, every ``fail_every``-th one parked for an
    hour, then run retention; what Redis uses then, over its empty start."""
    directory = Path(tempfile.mkdtemp(prefix="rb-bench-delay-memory-"))
    server = RedisServer(directory)
    server.start()
    monitor = RawRedis.from_url(server.url)
    try:
        empty = await _used_memory(monitor)
        client = connect(RedisSettings(url=server.url))
        stream = unique_stream("delay.memory")
        key = keys.stream_key(stream)
        publisher = Publisher(client)
        for chunk in _chunks(events, BATCH):
            await publisher.publish_many(chunk, stream=stream)
        failing = {e.id for e in events[::fail_every]} if fail_every else set()
        handled = 0

        async def handler(message: Message[Any]) -> None:
            nonlocal handled
            handled += 1
            if message.event.id in failing:
                raise RetryLater("bench: try again in an hour", delay_ms=RETRY_DELAY_MS)

        consumer = StreamConsumer(
            client,
            Subscription(stream=stream, group=GROUP, handler=handler),
            settings=ConsumerSettings(),  # as a service runs it: idempotency markers and all
            consumer_name="bench-memory",
            service="bench",
        )
        main = consumer.start()
        delay_key = keys.delay_key(stream)

        async def settled() -> bool:
            if main.done():
                main.result()  # raises what stopped the consumer
            return (
                handled >= len(events)
                and not (await monitor.xpending(key, GROUP))["pending"]
                and await monitor.zcard(delay_key) == len(failing)
            )

        try:
            await _until(settled, "the consumer to handle, acknowledge and park every event")
        finally:
            consumer.stop()
            await main
        # a retention pass repeats XTRIM until it trims nothing; passes are repeated here too
        # until nothing is left: the state retention reaches once it has caught up
        retention = StreamMonitor(client, [stream])
        passes = [await retention.trim_acknowledged(stream)]
        after_one_pass = await _used_memory(monitor) - empty
        while passes[-1]:
            passes.append(await retention.trim_acknowledged(stream))
        await client.aclose()  # its connection's buffers are not the data's memory
        used = await _used_memory(monitor) - empty
        prefix = key.removesuffix("stream")
        keys_bytes = {
            name.decode().removeprefix(prefix): int(
                await monitor.memory_usage(name, samples=0) or 0  # samples=0: every element
            )
            async for name in monitor.scan_iter(match=prefix + "*")
        }
        return Memory(
            used, int(await monitor.xlen(key)), keys_bytes, after_one_pass, len(passes) - 1
        )
    finally:
        await monitor.aclose()
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _kib(count: int) -> float:
    return count / 1024


async def bench_memory(options: Options) -> list[str]:
    if shutil.which("redis-server") is None:
        note("memory-retries: skipped: it needs a redis-server binary to start empty Redises")
        return []
    events = make_events(options.events * 4)
    # one round each: used_memory is a count of bytes, not a timing; noise does not move it
    retries = await memory_round(events, fail_every=FAIL_EVERY)
    plain = await memory_round(events, fail_every=None)
    failing = len(events[::FAIL_EVERY])
    for name, memory in (("with retries", retries), ("without", plain)):
        parts = ", ".join(f"{k} {_kib(v):.0f}" for k, v in sorted(memory.keys_bytes.items()))
        note(
            f"memory-retries: {name}: {_kib(memory.used_bytes):.0f} KiB over an empty Redis "
            f"after {memory.trimming_passes} retention passes ("
            f"{_kib(memory.after_one_pass_bytes):.0f} KiB after the first); "
            f"{memory.stream_length} entries left; keys (KiB): {parts}"
        )
    parked = retries.keys_bytes.get("delay", 0) + retries.keys_bytes.get("delay:items", 0)
    note(
        f"memory-retries: {len(events)} events, {failing} parked for an hour: "
        f"{parked / max(failing, 1):.0f} bytes each in the delay store, against "
        f"{len(events[0].to_json())} bytes of event JSON"
    )
    ratio = retries.used_bytes / plain.used_bytes if plain.used_bytes else float("nan")
    note(
        f"memory-retries: goal ratio ≤ {GOAL_MEMORY_RATIO} "
        f"{'met' if ratio <= GOAL_MEMORY_RATIO else 'MISSED'}"
    )
    line = bench_line(
        "memory-retries",
        _kib(retries.used_bytes),
        "KiB",
        "memory-no-retries",
        _kib(plain.used_bytes),
    )
    return [emit(line)]


# -- lateness of delayed events ----------------------------------------------------------------


def _due_times(count: int) -> list[int]:
    """Due time (ms since the epoch) of each of ``count`` events: ``SLOTS`` distinct times,
    ``LEAD_MS`` from now and ``SPREAD_MS / SLOTS`` apart, events shared out evenly."""
    first = int(_now_ms()) + LEAD_MS
    step = SPREAD_MS // SLOTS
    return [first + (i * SLOTS // count) * step for i in range(count)]


def _slots(events: list[CloudEvent], due: list[int]) -> list[tuple[int, list[CloudEvent]]]:
    """(due time, the events due then), in due order."""
    by_due: dict[int, list[CloudEvent]] = {}
    for event, due_ms in zip(events, due, strict=True):
        by_due.setdefault(due_ms, []).append(event)
    return sorted(by_due.items(), key=lambda slot: slot[0])


async def lateness_runtime(
    client: Redis, monitor: RawRedis, events: list[CloudEvent]
) -> list[float]:
    """Lateness (ms) of each event published for later, as its handler sees it."""
    stream = unique_stream("delay.lateness.runtime")
    due_of: dict[str, int] = {}
    late_ms: list[float] = []
    all_handled = asyncio.Event()

    async def handler(message: Message[Any]) -> None:
        late_ms.append(_now_ms() - due_of[message.event.id])
        if len(late_ms) == len(events):
            all_handled.set()

    consumer = StreamConsumer(
        client,
        Subscription(stream=stream, group=GROUP, handler=handler),
        settings=ConsumerSettings(),  # the default promote interval (500 ms) and all
        consumer_name="bench-lateness",
        service="bench",
    )
    main = consumer.start()
    publisher = Publisher(client)
    try:
        gc.collect()
        for due_ms, slot in _slots(events, _due_times(len(events))):
            deliver_at = datetime.fromtimestamp(due_ms / 1000, UTC)
            # the publisher's own ms, so that float rounding cannot put due_of 1 ms off
            for event in slot:
                due_of[event.id] = int(deliver_at.timestamp() * 1000)
            await publisher.publish_later(slot, deliver_at, stream=stream)
        waiter = asyncio.ensure_future(all_handled.wait())
        finished, _ = await asyncio.wait(
            {waiter, main},
            timeout=(LEAD_MS + SPREAD_MS) / 1000 + STUCK_S,
            return_when=asyncio.FIRST_COMPLETED,
        )
        waiter.cancel()
        if waiter not in finished:
            if main in finished:
                main.result()
            raise RuntimeError(f"handled {len(late_ms)} of {len(events)} delayed events in time")
    finally:
        consumer.stop()
        await main
        await delete_stream_family(monitor, stream)
    return sorted(late_ms)


async def lateness_raw(
    writer: RawRedis, reader: RawRedis, monitor: RawRedis, events: list[CloudEvent]
) -> list[float]:
    """Lateness (ms) of the same events appended by a timer at their due times and read by
    a plain XREADGROUP loop: the floor any delivery at a given time pays."""
    stream = unique_stream("delay.lateness.raw")
    key = keys.stream_key(stream)
    await monitor.xgroup_create(key, GROUP, id="0", mkstream=True)
    slots = [
        (due_ms, [{**event.to_entry(), "due": str(due_ms)} for event in slot])
        for due_ms, slot in _slots(events, _due_times(len(events)))
    ]  # encoded before any due time
    late_ms: list[float] = []

    async def read() -> None:
        while len(late_ms) < len(events):
            reply = await reader.xreadgroup(GROUP, "bench-raw", {key: ">"}, count=100, block=2000)
            now = _now_ms()
            if not reply:
                continue
            entries = reply[0][1]
            late_ms.extend(now - int(fields[b"due"]) for _entry_id, fields in entries)
            await reader.xack(key, GROUP, *(entry_id for entry_id, _fields in entries))

    async def write() -> None:
        for due_ms, entries in slots:
            await asyncio.sleep(max(due_ms - _now_ms(), 0.0) / 1000)
            async with writer.pipeline(transaction=False) as pipe:
                for entry in entries:
                    pipe.xadd(key, entry)  # type: ignore[arg-type]
                await pipe.execute()

    try:
        gc.collect()
        await asyncio.wait_for(
            asyncio.gather(read(), write()), timeout=(LEAD_MS + SPREAD_MS) / 1000 + STUCK_S
        )
    finally:
        await delete_stream_family(monitor, stream)
    return sorted(late_ms)


async def bench_lateness(
    client: Redis, raw_writer: RawRedis, raw_reader: RawRedis, monitor: RawRedis, options: Options
) -> list[str]:
    events = make_events(max(options.events // 10, 100))

    async def runtime() -> list[float]:
        return await lateness_runtime(client, monitor, events)

    async def raw() -> list[float]:
        return await lateness_raw(raw_writer, raw_reader, monitor, events)

    runtime_rounds: list[list[float]] = []
    raw_rounds: list[list[float]] = []
    for round_ in range(options.repeat):
        # alternate which side goes first, so drift on a noisy machine hits both
        order: list[tuple[Callable[[], Awaitable[list[float]]], list[list[float]]]] = [
            (runtime, runtime_rounds),
            (raw, raw_rounds),
        ]
        for side, rounds in order if round_ % 2 else reversed(order):
            rounds.append(await side())

    # the least disturbed round of each side: the one with the lowest p99
    def steadiest(rounds: list[list[float]]) -> list[float]:
        return min(rounds, key=lambda late: percentile(late, 99))

    runtime_late, raw_late = steadiest(runtime_rounds), steadiest(raw_rounds)
    note(
        f"delayed-lateness: {len(events)} events due over {SPREAD_MS} ms at {SLOTS} times; "
        f"runtime max {runtime_late[-1]:.1f} ms, earliest {runtime_late[0]:.1f} ms "
        "(negative: handled before due)"
    )
    return [
        emit(
            ms_line(
                f"delayed-lateness-p{q}",
                percentile(runtime_late, q),
                f"raw-timer-xadd-xreadgroup-p{q}",
                percentile(raw_late, q),
            )
        )
        for q in (50, 99)
    ]


async def run(url: str, options: Options) -> list[str]:
    """Run the three comparisons; print and return their figure lines."""
    quiet_runtime_logs()
    client = connect(RedisSettings(url=url))  # the runtime's own client, as services get it
    raw_writer = RawRedis.from_url(url)
    raw_reader = RawRedis.from_url(url)
    monitor = RawRedis.from_url(url)  # setup, checks, cleanup: off the timed clients
    async with closing_all(client, raw_writer, raw_reader, monitor):
        lines = await bench_promote(client, monitor, options)
        lines += await bench_memory(options)
        lines += await bench_lateness(client, raw_writer, raw_reader, monitor, options)
        return lines


if __name__ == "__main__":
    run_alone(__doc__.splitlines()[0], run)
