"""Publish throughput: the runtime's publisher versus raw redis-py XADD, in the same run.

The events (``payment.succeeded.v1`` CloudEvents) are built before the clock
starts; the publisher's share of the work (contract validation, JSON encoding,
metrics) is what is measured against the baseline, which writes the same JSON
documents, encoded in advance.

- ``publish-single``: ``await publisher.publish(event)`` one at a time, a fifth
  of ``--events`` (10,000 by default); baseline ``raw-xadd``: ``await XADD`` one
  at a time.
- ``publish-batched``: ``publisher.publish_many`` in batches of 100 (``--events``,
  50,000 by default); baseline ``raw-xadd-pipeline``: 100 ``XADD`` in one
  non-transactional pipeline per batch.

Run alone: ``uv run --frozen python bench/publish.py [--events N] [--repeat R]``.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable

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
    run_alone,
    timed,
    unique_stream,
)

from riverbed import keys
from riverbed.connection import connect
from riverbed.publisher import Publisher
from riverbed.settings import RedisSettings
from riverbed_contracts import CloudEvent

BATCH = 100  # events per publish_many / per pipeline
WARM_UP_EVENTS = 1_000

#: one side of a comparison: (events, the stream to write to) -> the timed work
Side = Callable[[list[CloudEvent], str], Callable[[], Awaitable[None]]]


def runtime_single(publisher: Publisher) -> Side:
    def prepare(events: list[CloudEvent], stream: str) -> Callable[[], Awaitable[None]]:
        async def work() -> None:
            for event in events:
                await publisher.publish(event, stream=stream)

        return work

    return prepare


def raw_single(client: RawRedis) -> Side:
    def prepare(events: list[CloudEvent], stream: str) -> Callable[[], Awaitable[None]]:
        key = keys.stream_key(stream)
        entries = [event.to_entry() for event in events]  # encoded before the clock starts

        async def work() -> None:
            for entry in entries:
                await client.xadd(key, entry)  # type: ignore[arg-type]

        return work

    return prepare


def runtime_batched(publisher: Publisher) -> Side:
    def prepare(events: list[CloudEvent], stream: str) -> Callable[[], Awaitable[None]]:
        batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]

        async def work() -> None:
            for batch in batches:
                await publisher.publish_many(batch, stream=stream)

        return work

    return prepare


def raw_batched(client: RawRedis) -> Side:
    def prepare(events: list[CloudEvent], stream: str) -> Callable[[], Awaitable[None]]:
        key = keys.stream_key(stream)
        entries = [event.to_entry() for event in events]
        batches = [entries[i : i + BATCH] for i in range(0, len(entries), BATCH)]

        async def work() -> None:
            for batch in batches:
                async with client.pipeline(transaction=False) as pipe:
                    for entry in batch:
                        pipe.xadd(key, entry)  # type: ignore[arg-type]
                    await pipe.execute()

        return work

    return prepare


async def _one(side: Side, events: list[CloudEvent], monitor: RawRedis, label: str) -> Rate:
    stream = unique_stream(label)
    work = side(events, stream)
    gc.collect()
    try:
        return await timed(len(events), work)
    finally:
        await delete_stream_family(monitor, stream)


async def _compare(
    runtime: Side, raw: Side, events: list[CloudEvent], monitor: RawRedis, repeat: int
) -> tuple[Rate, Rate]:
    warm = events[: min(WARM_UP_EVENTS, len(events))]
    await _one(runtime, warm, monitor, "publish.runtime")
    await _one(raw, warm, monitor, "publish.raw")
    runtime_rates: list[Rate] = []
    raw_rates: list[Rate] = []
    for round_ in range(repeat):
        # alternate which side goes first, so drift on a noisy machine hits both
        order = [(runtime, runtime_rates), (raw, raw_rates)]
        for side, rates in order if round_ % 2 else reversed(order):
            rates.append(await _one(side, events, monitor, "publish"))
    return best(runtime_rates), best(raw_rates)


async def run(url: str, options: Options) -> list[str]:
    """Time both comparisons; print and return their figure lines."""
    client = connect(RedisSettings(url=url))  # the runtime's own client, as services get it
    raw_client = RawRedis.from_url(url)
    monitor = RawRedis.from_url(url)  # cleanup, off both timed clients
    async with closing_all(client, raw_client, monitor):
        events = make_events(options.events)
        single_events = events[: max(options.events // 5, 1)]
        publisher = Publisher(client)
        comparisons = [
            (
                "publish-single",
                runtime_single(publisher),
                "raw-xadd",
                raw_single(raw_client),
                single_events,
            ),
            (
                "publish-batched",
                runtime_batched(publisher),
                "raw-xadd-pipeline",
                raw_batched(raw_client),
                events,
            ),
        ]
        lines = []
        for name, runtime_side, baseline_name, raw_side, sample in comparisons:
            runtime, raw = await _compare(runtime_side, raw_side, sample, monitor, options.repeat)
            lines.append(
                emit(
                    bench_line(name, runtime.per_second, "events/s", baseline_name, raw.per_second)
                )
            )
        return lines


if __name__ == "__main__":
    run_alone(__doc__.splitlines()[0], run)
