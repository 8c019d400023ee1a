"""How the consumer talks to Redis while entries keep coming: one call a batch, and no more
entries in hand than its handlers can start soon."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from redis.asyncio.cluster import RedisCluster

from riverbed import keys, metrics, scripts
from riverbed.consumer import Message
from riverbed.consumer.base import ConsumerBase
from riverbed.publisher import Publisher
from riverbed.testing import ConsumerFactory, fast_settings, make_event, wait_for

#: scripts the consumer runs on timers, whatever it reads: not the per-batch path
_HOUSEKEEPING = {s.sha for s in (scripts.CLAIM, scripts.HEARTBEAT, scripts.KEEPALIVE)} | {
    s.sha for s in (scripts.PROMOTE, scripts.CARRY_OVER_LEGACY)
}


def _command_name(args: tuple[Any, ...]) -> str | None:
    """The counted name of a command (None: not the per-batch path)."""
    name = str(args[0]).upper()
    if name == "EVALSHA":
        return None if args[1] in _HOUSEKEEPING else f"EVALSHA {args[1]}"
    return name if name in ("XREADGROUP", "XACK") else None


def _count_round_trips(
    client: redis.asyncio.Redis, counts: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Count round trips on the per-batch path from now on: each command of the client, and
    each write of the consumer's own read connection (named by its commands)."""
    execute: Callable[..., Awaitable[Any]] = client.execute_command
    pipelined = ConsumerBase._pipelined

    async def counting(*args: Any, **options: Any) -> Any:
        name = _command_name(args)
        if name is not None:
            counts[name] += 1
        return await execute(*args, **options)

    async def counted_pipelined(self: ConsumerBase, *commands: tuple[Any, ...]) -> list[Any]:
        counts["pipeline " + " + ".join(str(_command_name(c)) for c in commands)] += 1
        return await pipelined(self, *commands)

    client.execute_command = counting  # type: ignore[method-assign]
    monkeypatch.setattr(ConsumerBase, "_pipelined", counted_pipelined)


@pytest.mark.integration
async def test_a_backlog_takes_one_call_a_batch(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reading the next batch, checking the one in hand against the idempotency set and
    acknowledging the last one share a call: 2,000 events in batches of 100 take about 20
    calls, where reading, checking and acknowledging apart took 50 or more."""
    stream = f"t.{unique}"
    total, batch = 2_000, 100
    handled = 0

    async def handler(message: Message[Any]) -> None:
        nonlocal handled
        handled += 1

    await publisher.publish_many([make_event(i) for i in range(total)], stream=stream)
    counts: Counter[str] = Counter()
    _count_round_trips(redis_client, counts, monkeypatch)
    start_consumer(stream, handler, settings=fast_settings(batch_size=batch, block_ms=2_000))

    async def all_acknowledged() -> bool:
        if handled < total:
            return False
        summary = await redis_client.xpending(keys.stream_key(stream), "test")
        return int(summary["pending"]) == 0

    await wait_for(all_acknowledged, what="every event acknowledged")
    calls = sum(counts.values())
    if isinstance(redis_client, RedisCluster):
        # a Cluster's pipeline refuses scripts: the check and the read go as two calls at once
        assert calls <= 2 * (total // batch) + 5, counts
        assert counts[f"EVALSHA {scripts.ACK_CHECK.sha}"] >= total // batch - 1, counts
        return
    # one blocking read to start, one call a batch, a last flush or two of acknowledgements
    assert calls <= total // batch + 5, counts
    read_with_the_check = f"pipeline EVALSHA {scripts.ACK_CHECK.sha} + XREADGROUP"
    assert counts[read_with_the_check] >= total // batch - 1, counts


@pytest.mark.integration
async def test_slow_handlers_leave_the_backlog_to_siblings(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    """A consumer holds at most one batch (of at most ``concurrency``) beyond the handlers
    it runs: with slow handlers the rest of a backlog stays for its siblings to read."""
    stream = f"t.{unique}"
    concurrency = 4
    release = asyncio.Event()

    async def handler(message: Message[Any]) -> None:
        await release.wait()

    await publisher.publish_many([make_event(i) for i in range(100)], stream=stream)
    consumer = start_consumer(
        stream, handler, settings=fast_settings(batch_size=100, concurrency=concurrency)
    )
    await wait_for(lambda: consumer._handlers_running == concurrency, what="handlers busy")
    await asyncio.sleep(0.3)  # s: many read-loop turns, were it to read on
    pending = await redis_client.xpending(keys.stream_key(stream), "test")
    release.set()
    assert concurrency <= pending["pending"] <= 2 * concurrency


def _exposition(histogram: Histogram) -> list[str]:
    """The histogram's exposition lines but its creation time (which differs by design)."""
    registry = CollectorRegistry()
    registry.register(histogram)
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if "_created" not in line]


@pytest.mark.parametrize(
    "amounts",
    [
        [],
        [0.0001],
        [0.0005, 0.001, 0.0010001, 2.5, 61.0, 1e9],  # on, just past and beyond the bounds
        [0.003] * 50 + [0.2] * 7 + [0.0],
    ],
)
def test_observing_all_at_once_exports_what_one_by_one_does(amounts: list[float]) -> None:
    buckets = (0.0005, 0.001, 0.005, 0.01, 0.25, 2.5, 60)
    one_by_one = Histogram("h", "h", ["type"], buckets=buckets, registry=None)
    at_once = Histogram("h", "h", ["type"], buckets=buckets, registry=None)
    child = one_by_one.labels("a")
    for amount in amounts:
        child.observe(amount)
    metrics.observe_all(at_once.labels("a"), amounts)
    assert _exposition(at_once) == _exposition(one_by_one)
