"""The reliable consumer against a real Redis: the rows of docs/delivery.md's table."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
import redis.asyncio
from prometheus_client import REGISTRY

from riverbed import keys
from riverbed.consumer import Message, StreamConsumer, Subscription
from riverbed.delay import DelayStore
from riverbed.errors import PermanentError, RetryLater
from riverbed.publisher import Publisher
from riverbed.testing import TEST_TYPE, ConsumerFactory, fast_settings, make_event, wait_for
from riverbed_contracts import CloudEvent

pytestmark = pytest.mark.integration


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def pending_count(client: redis.asyncio.Redis, stream: str, group: str = "test") -> int:
    """Entries pending in the group; -1 while the consumer has not created the group yet."""
    try:
        summary = await client.xpending(keys.stream_key(stream), group)
    except redis.ResponseError as error:
        if "NOGROUP" in str(error):
            return -1
        raise
    return int(summary["pending"])


async def left_pending_by(
    consumer: str, client: redis.asyncio.Redis, stream: str, events: list[CloudEvent]
) -> list[str]:
    """Publish ``events`` and have ``consumer`` read them and die without acknowledging."""
    key = keys.stream_key(stream)
    entry_ids = await Publisher(client).publish_many(events, stream=stream)
    await client.xgroup_create(key, "test", id="0")
    await client.xreadgroup("test", consumer, {key: ">"}, count=len(events))
    return entry_ids


async def dead_letters(client: redis.asyncio.Redis, stream: str) -> list[dict[str, str]]:
    entries = await client.xrange(keys.dead_letter_key(stream))
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def test_every_event_is_handled_and_acknowledged(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    seen: list[str] = []

    async def handler(message: Message[Any]) -> None:
        seen.append(message.event.id)

    events = [make_event(i) for i in range(250)]
    await publisher.publish_many(events, stream=stream)
    start_consumer(stream, handler)

    await wait_for(lambda: len(seen) == 250, what="250 handled")
    await wait_for(
        lambda: _is_zero(pending_count(redis_client, stream)), what="nothing left pending"
    )
    assert sorted(seen) == sorted(e.id for e in events)
    assert metric("riverbed_acknowledged_total", stream=stream, group="test", type=TEST_TYPE) == 250


async def _is_zero(value: Any) -> bool:
    return (await value) == 0


async def test_handler_sees_typed_payload_and_attempt(
    start_consumer: ConsumerFactory, publisher: Publisher, unique: str
) -> None:
    stream = f"t.{unique}"
    got: list[Message[Any]] = []

    async def handler(message: Message[Any]) -> None:
        got.append(message)

    await publisher.publish(make_event(7, correlationid="corr-1"), stream=stream)
    start_consumer(stream, handler)
    await wait_for(lambda: len(got) == 1)
    message = got[0]
    assert message.payload.amount == 1007
    assert message.attempt == 1
    assert message.stream == stream
    assert message.event.correlationid == "corr-1"


async def test_failed_event_is_retried_with_backoff_while_later_events_flow(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    order: list[tuple[str, int]] = []
    first = make_event(0)

    async def handler(message: Message[Any]) -> None:
        order.append((message.event.id, message.attempt))
        if message.event.id == first.id and message.attempt == 1:
            raise ConnectionError("peer unavailable")

    later = [make_event(i) for i in range(1, 6)]
    await publisher.publish_many([first, *later], stream=stream)
    start_consumer(stream, handler, settings=fast_settings(retry_base_ms=300))

    await wait_for(lambda: (first.id, 2) in order, what="the retry")
    retry_position = order.index((first.id, 2))
    handled_before_retry = {event_id for event_id, _ in order[:retry_position]}
    assert {e.id for e in later} <= handled_before_retry, "later events waited for the retry"
    await wait_for(lambda: _is_zero(pending_count(redis_client, stream)), what="all acked")
    assert metric("riverbed_retried_total", stream=stream, group="test", type=TEST_TYPE) == 1
    assert await dead_letters(redis_client, stream) == []


async def test_poison_message_goes_to_dead_letter_after_3_deliveries_while_others_flow(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    poison = make_event(0)
    attempts: Counter[str] = Counter()
    healthy_handled: list[str] = []

    async def handler(message: Message[Any]) -> None:
        attempts[message.event.id] += 1
        if message.event.id == poison.id:
            raise ValueError("cannot process this one")
        healthy_handled.append(message.event.id)

    others = [make_event(i) for i in range(1, 21)]
    await publisher.publish_many([poison, *others], stream=stream)
    start_consumer(stream, handler, settings=fast_settings(max_deliveries=3))

    await wait_for(lambda: dead_letters(redis_client, stream), what="a dead letter")
    assert len(healthy_handled) == 20
    [dead] = await dead_letters(redis_client, stream)
    assert attempts[poison.id] == 3
    assert dead["attempts"] == "3"
    assert dead["error_type"] == "ValueError"
    assert dead["error_message"] == "cannot process this one"
    assert dead["reason"] == "exhausted"
    assert dead["service"] == "test-service"
    assert dead["stream"] == stream
    assert json.loads(dead["event"])["id"] == poison.id
    original = await redis_client.xrange(
        keys.stream_key(stream), dead["original_id"], dead["original_id"]
    )
    assert original, "original_id names the entry in the source stream"
    await wait_for(lambda: _is_zero(pending_count(redis_client, stream)), what="poison acked")


async def test_entry_that_keeps_killing_its_consumer_is_dead_lettered_without_running(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    """A handler that crashes the process never reports a failure; the count still grows."""
    stream = f"t.{unique}"
    key = keys.stream_key(stream)
    [entry_id] = await left_pending_by("crashed-1", redis_client, stream, [make_event(1)])
    for crashed in ("crashed-2", "crashed-3"):  # two more deliveries, each a crash
        await redis_client.xclaim(key, "test", crashed, 0, [entry_id])
    called = False

    async def handler(message: Message[Any]) -> None:
        nonlocal called
        called = True

    start_consumer(
        stream, handler, settings=fast_settings(max_deliveries=3, visibility_timeout_ms=100)
    )
    await wait_for(lambda: dead_letters(redis_client, stream), what="a dead letter")
    [dead] = await dead_letters(redis_client, stream)
    assert (dead["reason"], dead["attempts"]) == ("max_deliveries", "4")
    assert not called


async def test_permanent_error_dead_letters_at_once(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    calls = 0

    async def handler(message: Message[Any]) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("recipient does not exist")

    await publisher.publish(make_event(1), stream=stream)
    start_consumer(stream, handler)
    await wait_for(lambda: dead_letters(redis_client, stream), what="a dead letter")
    [dead] = await dead_letters(redis_client, stream)
    assert calls == 1
    assert (dead["attempts"], dead["reason"]) == ("1", "permanent")


async def test_payload_failing_validation_is_dead_lettered_without_calling_the_handler(
    start_consumer: ConsumerFactory, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"t.{unique}"
    bad = CloudEvent(type=TEST_TYPE, data={"amount": "lots"})
    await redis_client.xadd(
        keys.stream_key(stream), bad.to_entry()
    )  # bypasses the publisher's check
    await redis_client.xadd(keys.stream_key(stream), {"something": "else"})
    called = False

    async def handler(message: Message[Any]) -> None:
        nonlocal called
        called = True

    start_consumer(stream, handler)
    await wait_for(lambda: _has_n(dead_letters(redis_client, stream), 2), what="two dead letters")
    invalid, undecodable = await dead_letters(redis_client, stream)
    assert invalid["reason"] == "invalid"
    assert invalid["error_type"] == "ValidationError"
    assert undecodable["reason"] == "undecodable"
    assert json.loads(undecodable["event"]) == {"something": "else"}
    assert not called


async def _has_n(value: Any, n: int) -> bool:
    return len(await value) == n


async def test_retry_later_overrides_the_backoff(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    attempts: list[int] = []

    async def handler(message: Message[Any]) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            raise RetryLater("429 from peer", delay_ms=60_000)

    await publisher.publish(make_event(1), stream=stream)
    start_consumer(stream, handler)
    await wait_for(lambda: attempts == [1])
    delay = keys.delay_key(stream)
    await wait_for(lambda: redis_client.zcard(delay), what="retry parked in the delay store")
    [(_, due_ms)] = await redis_client.zrange(delay, 0, 0, withscores=True)
    now_ms = (await redis_client.time())[0] * 1000
    assert due_ms - now_ms > 50_000, "the retry waits for the peer's Retry-After"
    assert await pending_count(redis_client, stream) == 0, "a parked retry is not pending"


async def test_deferrals_do_not_count_towards_the_dead_letter_limit(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    attempts: list[int] = []

    async def handler(message: Message[Any]) -> None:
        attempts.append(message.attempt)
        if len(attempts) <= 5:  # a rate limit says "not now", five times: max_deliveries is 3
            raise RetryLater("domain over its rate", delay_ms=10, counts_as_delivery=False)
        if len(attempts) == 6:
            raise RuntimeError("then one real failure")

    await publisher.publish(make_event(1), stream=stream)
    start_consumer(stream, handler)
    await wait_for(lambda: len(attempts) == 7, what="five deferrals, a failure, a success")

    async def acknowledged() -> bool:
        return await pending_count(redis_client, stream) == 0

    await wait_for(acknowledged, what="acknowledged")
    assert attempts == [1, 1, 1, 1, 1, 1, 2], "deferrals keep the attempt; a failure counts"
    assert await dead_letters(redis_client, stream) == []


async def test_a_deferral_on_the_last_attempt_still_gets_that_attempt(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    calls: list[str] = []

    async def handler(message: Message[Any]) -> None:
        if message.attempt < 3:
            calls.append(f"fail {message.attempt}")
            raise RuntimeError("transient")
        if "defer 3" not in calls:
            calls.append("defer 3")
            raise RetryLater("not now", delay_ms=10, counts_as_delivery=False)
        calls.append("fail 3")
        raise RuntimeError("still failing on the last attempt")

    await publisher.publish(make_event(1), stream=stream)
    start_consumer(stream, handler)  # max_deliveries=3
    await wait_for(lambda: dead_letters(redis_client, stream), what="a dead letter")
    assert calls == ["fail 1", "fail 2", "defer 3", "fail 3"]
    [dead] = await dead_letters(redis_client, stream)
    assert (dead["reason"], dead["attempts"]) == ("exhausted", "3")


async def test_entries_of_a_crashed_consumer_are_reclaimed_after_the_visibility_timeout(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    await left_pending_by("crashed", redis_client, stream, [make_event(i) for i in range(5)])
    seen: list[tuple[str, int]] = []

    async def handler(message: Message[Any]) -> None:
        seen.append((message.event.id, message.attempt))

    before = metric("riverbed_reclaimed_total", stream=stream, group="test")
    start_consumer(
        stream, handler, name="sibling", settings=fast_settings(visibility_timeout_ms=300)
    )
    await wait_for(lambda: len(seen) == 5, what="reclaimed entries handled")
    assert {attempt for _, attempt in seen} == {2}, "a reclaim is the second delivery"
    assert metric("riverbed_reclaimed_total", stream=stream, group="test") - before == 5
    await wait_for(lambda: _is_zero(pending_count(redis_client, stream)), what="all acked")


async def test_slow_handler_keeps_its_entry_so_no_sibling_runs_it_twice(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    runs: Counter[str] = Counter()
    release = asyncio.Event()

    async def slow(message: Message[Any]) -> None:
        runs[message.event.id] += 1
        await release.wait()

    # keep-alive every 300 ms: a margin of 600 ms for a loaded machine (CI runs three
    # cluster nodes beside the tests) before the sibling may take the entry
    settings = fast_settings(visibility_timeout_ms=900)
    await publisher.publish(make_event(1), stream=stream)
    start_consumer(stream, slow, name="a", settings=settings)
    await wait_for(lambda: sum(runs.values()) == 1, what="handler started")
    start_consumer(stream, slow, name="b", settings=settings)
    # let the sibling scan many times over a span of three visibility timeouts
    for _ in range(9):
        before = metric("riverbed_reclaimed_total", stream=stream, group="test")
        await asyncio.sleep(0.3)  # real time must pass for idle time to grow
        assert metric("riverbed_reclaimed_total", stream=stream, group="test") == before
    release.set()
    await wait_for(lambda: _is_zero(pending_count(redis_client, stream)), what="acked")
    assert list(runs.values()) == [1]


async def test_restarted_consumer_rereads_its_own_pending_entries_first(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    events = [make_event(i) for i in range(3)]
    await left_pending_by("pod-0", redis_client, stream, events)
    seen: list[str] = []

    async def handler(message: Message[Any]) -> None:
        seen.append(message.event.id)

    # a visibility timeout of an hour: only the re-read of its own entries can explain success
    start_consumer(
        stream, handler, name="pod-0", settings=fast_settings(visibility_timeout_ms=3_600_000)
    )
    await wait_for(lambda: len(seen) == 3, what="own pending re-read")
    assert sorted(seen) == sorted(e.id for e in events)


async def test_entries_trimmed_while_pending_are_acknowledged_and_counted(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    await left_pending_by("crashed", redis_client, stream, [make_event(i) for i in range(4)])
    await redis_client.xtrim(keys.stream_key(stream), maxlen=0)

    async def handler(message: Message[Any]) -> None:
        raise AssertionError("nothing is left to handle")

    start_consumer(stream, handler, settings=fast_settings(visibility_timeout_ms=200))
    await wait_for(lambda: _is_zero(pending_count(redis_client, stream)), what="pending cleared")
    assert metric("riverbed_deleted_while_pending_total", stream=stream, group="test") == 4


async def test_same_event_id_is_handled_once_per_group(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    event = make_event(1)
    calls: Counter[str] = Counter()

    async def handler(message: Message[Any]) -> None:
        calls[message.event.id] += 1

    await publisher.publish(event, stream=stream)
    start_consumer(stream, handler)
    await wait_for(lambda: calls[event.id] == 1)
    await wait_for(lambda: _is_zero(pending_count(redis_client, stream)), what="acked")
    await publisher.publish(event, stream=stream)  # a producer's retry: same id, new entry
    await wait_for(
        lambda: metric("riverbed_duplicates_skipped_total", stream=stream, group="test") == 1,
        what="duplicate skipped",
    )
    await wait_for(lambda: _is_zero(pending_count(redis_client, stream)), what="duplicate acked")
    assert calls[event.id] == 1
    remembered_ms = await redis_client.zscore(keys.idempotency_key(stream, "test"), event.id)
    assert remembered_ms is not None


async def test_handled_event_ids_are_forgotten_after_the_idempotency_window(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    done = keys.idempotency_key(stream, "test")
    await redis_client.zadd(done, {"handled-long-ago": 1_000})  # ms since epoch: 1970
    calls = 0

    async def handler(message: Message[Any]) -> None:
        nonlocal calls
        calls += 1

    await publisher.publish(make_event(1), stream=stream)
    start_consumer(stream, handler)
    await wait_for(lambda: _is_zero(pending_count(redis_client, stream)), what="acked")
    assert calls == 1
    assert await redis_client.zscore(done, "handled-long-ago") is None
    assert await redis_client.zcard(done) == 1


async def test_stop_drains_in_flight_handlers_and_acknowledges_them(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    started = asyncio.Event()
    finished: list[str] = []

    async def handler(message: Message[Any]) -> None:
        started.set()
        await asyncio.sleep(0.3)  # a handler still busy when the stop comes
        finished.append(message.event.id)

    await publisher.publish_many([make_event(i) for i in range(5)], stream=stream)
    consumer = start_consumer(stream, handler)
    await asyncio.wait_for(started.wait(), 10)
    consumer.stop()
    await asyncio.wait_for(consumer.join(), 10)
    assert len(finished) == 5
    assert await pending_count(redis_client, stream) == 0


async def test_concurrency_is_bounded(
    start_consumer: ConsumerFactory, publisher: Publisher, unique: str
) -> None:
    stream = f"t.{unique}"
    running = 0
    peak = 0
    done = 0

    async def handler(message: Message[Any]) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.005)
        running -= 1
        done += 1

    await publisher.publish_many([make_event(i) for i in range(200)], stream=stream)
    start_consumer(stream, handler, settings=fast_settings(concurrency=7))
    await wait_for(lambda: done == 200)
    assert peak == 7


async def test_idle_consumers_with_nothing_pending_are_removed(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    key = keys.stream_key(stream)
    await redis_client.xgroup_create(key, "test", id="0", mkstream=True)
    await redis_client.xgroup_createconsumer(key, "test", "old-pod")  # a pod long gone
    assert [c["name"] for c in await redis_client.xinfo_consumers(key, "test")] == [b"old-pod"]

    async def handler(message: Message[Any]) -> None:
        return None

    start_consumer(stream, handler, settings=fast_settings(consumer_idle_remove_ms=1_000))

    async def old_pod_gone() -> bool:
        names = {c["name"] for c in await redis_client.xinfo_consumers(key, "test")}
        return b"old-pod" not in names

    await wait_for(old_pod_gone, what="idle consumer removed")


async def test_emitted_events_are_published_before_the_ack(own_redis: Any, unique: str) -> None:
    """Runs on a private Redis: emitted events go to their registry stream, a shared name."""
    client = redis.asyncio.Redis.from_url(own_redis.url)
    stream = f"t.{unique}"
    cause = make_event(3, correlationid="order-9")

    async def handler(message: Message[Any]) -> list[CloudEvent]:
        return [message.event.caused(TEST_TYPE, dict(message.event.data))]

    await Publisher(client).publish(cause, stream=stream)
    consumer = StreamConsumer(
        client,
        Subscription(stream=stream, group="test", handler=handler),
        settings=fast_settings(),
        consumer_name="c1",
        service="test-service",
    )
    consumer.start()
    try:
        await wait_for(lambda: _is_zero(pending_count(client, stream)), what="acked")
        [(_, fields)] = await client.xrange(keys.stream_key("payment.succeeded"))
        emitted = json.loads(fields[b"event"])
        assert emitted["causationid"] == cause.id
        assert emitted["correlationid"] == "order-9"
    finally:
        consumer.stop()
        await consumer.join()
        await client.aclose()


async def test_a_handlers_log_lines_carry_the_events_trace_id(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    unique: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from riverbed.logging import configure_logging, get_logger

    configure_logging(fmt="json")
    stream = f"t.{unique}"
    traced = make_event(1).model_copy(
        update={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    )
    handled: list[str] = []

    async def handler(message: Message[Any]) -> None:
        get_logger("handler").info("handling traced event")
        handled.append(message.event.id)

    await publisher.publish(traced, stream=stream)
    start_consumer(stream, handler)
    await wait_for(lambda: handled == [traced.id], what="the event handled")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    [line] = [line for line in lines if line["event"] == "handling traced event"]
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert line["event_id"] == traced.id


async def test_an_internal_command_from_outside_its_producers_is_dead_lettered_unhandled(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    handled: list[str] = []

    async def handler(message: Message[Any]) -> None:
        handled.append(message.event.source)

    def task(source: str) -> CloudEvent:
        body = {"id": "evt-1", "type": "payment.succeeded.v1", "time": "2026-01-01T00:00:00Z"}
        data = {"delivery_id": "d-1", "endpoint_id": "ep-1", "event": {**body, "data": {}}}
        return CloudEvent(type="webhook.delivery.requested.v1", data=data, source=source)

    forged, genuine = task("urn:riverbed:gateway:local"), task("urn:riverbed:webhooks")
    await publisher.publish_many([forged, genuine], stream=stream)
    start_consumer(stream, handler)
    await wait_for(lambda: dead_letters(redis_client, stream), what="the forgery dead-lettered")
    await wait_for(lambda: handled == ["urn:riverbed:webhooks"], what="the genuine task handled")
    [dead] = await dead_letters(redis_client, stream)
    assert dead["reason"] == "untrusted-source"
    assert "urn:riverbed:gateway:local" in dead["error_message"]


async def test_two_entries_of_one_event_are_never_handled_at_once(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    stream = f"t.{unique}"
    event = make_event(1)
    running: list[int] = []
    calls = 0
    release = asyncio.Event()

    async def handler(message: Message[Any]) -> None:
        nonlocal calls
        calls += 1
        running.append(1)
        try:
            await release.wait()
        finally:
            running.pop()

    # a producer killed after appending appends the same event again: one batch holds both
    await publisher.publish_many([event, event], stream=stream)
    start_consumer(stream, handler)
    await wait_for(lambda: calls == 1, what="the first entry handled")
    store = DelayStore(redis_client, stream)
    await wait_for(lambda: _parked(store), what="the copy set aside in the delay store")
    assert calls == 1, "the copy did not run beside the first"
    assert await pending_count(redis_client, stream) == 1, "only the first is in hand"
    release.set()
    await wait_for(
        lambda: metric("riverbed_duplicates_skipped_total", stream=stream, group="test") == 1,
        what="the copy skipped once the first concluded",
    )
    assert calls == 1


async def _parked(store: DelayStore) -> bool:
    return (await store.waiting())[0] == 1
