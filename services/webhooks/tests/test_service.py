"""The whole service on a real Redis, SQLite (and PostgreSQL), and real HTTP receivers on loopback.

Events go in on the source stream as the gateway would put them; requests come out
to receivers that verify every signature with ``standardwebhooks`` and answer
scripted statuses. Nothing waits a fixed time: every wait is for a condition.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis.asyncio
from redis.asyncio.cluster import RedisCluster

from riverbed import keys
from riverbed.publisher import Publisher
from riverbed.testing import make_event, wait_for
from riverbed_contracts import CloudEvent, event_from_entry
from riverbed_webhooks import metrics
from riverbed_webhooks.service_layer.fanout import fan_out

pytestmark = pytest.mark.integration


async def add_endpoint(
    running: Any, receiver: Any, path: str, *answers: Any, **fields: Any
) -> dict[str, Any]:
    url = receiver.script(path, *(answers or (200,)))
    answer = await running.client.post("/v1/endpoints", json={"url": url, **fields})
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    receiver.trust(path, created["secret"])
    return created


async def publish(redis_client: redis.asyncio.Redis, running: Any, n: int) -> CloudEvent:
    event = make_event(n)
    await Publisher(redis_client).publish(event, stream=running.source_stream)
    return event


async def outcomes(
    redis_client: redis.asyncio.Redis, running: Any, logical: str
) -> list[CloudEvent]:
    entries = await redis_client.xrange(keys.stream_key(running.stream(logical)))
    return [event_from_entry(fields) for _, fields in entries]


async def attempts_of(running: Any, event_id: str) -> list[dict[str, Any]]:
    answer = await running.client.get(f"/v1/events/{event_id}/attempts")
    assert answer.status_code == 200
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


async def all_logged(running: Any, events: list[CloudEvent]) -> bool:
    """Every event has an attempt in the log: the receiver sees a request before the
    service has its answer, and records it."""
    return all([await attempts_of(running, event.id) for event in events])


def counter(metric: Any, *labels: str) -> float:
    target = metric.labels(*labels) if labels else metric
    return float(target._value.get())


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
async def test_an_event_reaches_every_matching_endpoint_signed_and_logged(
    start_service: Any, receiver: Any, redis_client: redis.asyncio.Redis, database: Any
) -> None:
    running = await start_service(database)
    a = await add_endpoint(running, receiver, "/a", 200, event_types=["payment.succeeded"])
    b = await add_endpoint(running, receiver, "/b", 204)
    await add_endpoint(running, receiver, "/c", 200, event_types=["email.*"])
    event = await publish(redis_client, running, 1)

    await wait_for(lambda: len(receiver.to("/a")) == 1 and len(receiver.to("/b")) == 1,
                   what="both matching endpoints to receive the event")  # fmt: skip
    got = receiver.to("/a")[0]
    assert got.verified_by == [0]
    assert got.headers["webhook-id"] == event.id
    body = __import__("json").loads(got.body)
    assert (body["id"], body["type"], body["data"]) == (event.id, event.type, event.data)

    async def logged() -> bool:
        return len(await attempts_of(running, event.id)) == 2

    await wait_for(logged, what="both attempts in the delivery log")
    log = await attempts_of(running, event.id)
    assert sorted((x["endpoint_id"], x["status_code"], x["succeeded"]) for x in log) == sorted(
        [(a["id"], 200, True), (b["id"], 204, True)]
    )
    per_endpoint = (await running.client.get(f"/v1/endpoints/{a['id']}/attempts")).json()["data"]
    assert [x["event_id"] for x in per_endpoint] == [event.id]

    async def reported() -> bool:
        return len(await outcomes(redis_client, running, "webhook.delivery.succeeded")) == 2

    await wait_for(reported, what="two webhook.delivery.succeeded.v1 events")
    assert receiver.to("/c") == []


async def test_a_500_is_retried_with_the_same_webhook_id_until_2xx(
    start_service: Any, receiver: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service()
    await add_endpoint(running, receiver, "/flaky", 500, 500, 200)
    event = await publish(redis_client, running, 2)
    await wait_for(lambda: len(receiver.to("/flaky")) == 3, what="two retries")
    assert {r.headers["webhook-id"] for r in receiver.to("/flaky")} == {event.id}
    assert len({r.body for r in receiver.to("/flaky")}) == 1

    async def succeeded() -> bool:
        log = await attempts_of(running, event.id)
        return [x["status_code"] for x in log] == [500, 500, 200]

    await wait_for(succeeded, what="the log to show 500, 500, 200")


async def test_retry_after_on_429_decides_when_the_retry_is_due(
    start_service: Any, receiver: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service(retry_schedule_ms=[20, 20, 20])
    await add_endpoint(running, receiver, "/busy", (429, {"Retry-After": "2"}), 200)
    before_ms = time.time() * 1000
    await publish(redis_client, running, 3)
    schedule = keys.delay_key(running.stream("webhook.delivery.requested"))

    async def scheduled() -> bool:
        return await redis_client.zcard(schedule) == 1

    await wait_for(scheduled, what="the retry to be scheduled")
    ((_, due_ms),) = await redis_client.zrange(schedule, 0, 0, withscores=True)
    assert due_ms >= before_ms + 2000  # Retry-After: 2 s, not the 20 ms of the schedule
    await wait_for(lambda: len(receiver.to("/busy")) == 2, what="the retry after Retry-After")


async def test_410_disables_the_endpoint_reports_it_and_later_tasks_are_dropped(
    start_service: Any, receiver: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service()
    gone = await add_endpoint(running, receiver, "/gone", 410)
    await publish(redis_client, running, 4)

    async def reported() -> bool:
        return bool(await outcomes(redis_client, running, "webhook.endpoint.disabled"))

    await wait_for(reported, what="webhook.endpoint.disabled.v1")
    (disabled,) = await outcomes(redis_client, running, "webhook.endpoint.disabled")
    assert (disabled.data["endpoint_id"], disabled.data["reason"]) == (gone["id"], "gone")
    endpoint = (await running.client.get(f"/v1/endpoints/{gone['id']}")).json()
    assert (endpoint["enabled"], endpoint["disabled_reason"]) == (False, "gone")
    assert len(receiver.to("/gone")) == 1


async def test_after_the_last_attempt_it_is_exhausted_dead_lettered_and_replayable(
    start_service: Any, receiver: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service()
    down = await add_endpoint(running, receiver, "/down", 503, 503, 503, 200)
    started = "2000-01-01T00:00:00Z"
    event = await publish(redis_client, running, 5)

    async def exhausted() -> bool:
        return bool(await outcomes(redis_client, running, "webhook.delivery.exhausted"))

    await wait_for(exhausted, what="webhook.delivery.exhausted.v1")
    (report,) = await outcomes(redis_client, running, "webhook.delivery.exhausted")
    assert (report.data["attempts"], report.data["last_status_code"]) == (3, 503)
    dlq = keys.dead_letter_key(running.stream("webhook.delivery.requested"))

    async def dead_lettered() -> bool:
        return await redis_client.xlen(dlq) == 1

    await wait_for(dead_lettered, what="the task in the dead-letter stream")
    deliveries = (await running.client.get(f"/v1/events/{event.id}/deliveries")).json()["data"]
    assert [(d["status"], d["attempts"]) for d in deliveries] == [("exhausted", 3)]

    replayed = await running.client.post(
        f"/v1/endpoints/{down['id']}/replay", json={"since": started}
    )
    assert replayed.status_code == 202
    assert replayed.json()["count"] == 1
    await wait_for(lambda: len(receiver.to("/down")) == 4, what="the replayed delivery")
    assert receiver.to("/down")[-1].headers["webhook-id"] == event.id

    async def succeeded() -> bool:
        found = (await running.client.get(f"/v1/events/{event.id}/deliveries")).json()["data"]
        return [d["status"] for d in found] == ["succeeded"]

    await wait_for(succeeded, what="the replay to succeed")


async def test_a_slow_endpoint_times_out_without_delaying_another(
    start_service: Any, receiver: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service(request_timeout_s=2.0, retry_schedule_ms=[60_000])
    await add_endpoint(running, receiver, "/slow", "slow")
    await add_endpoint(running, receiver, "/fast", 200)
    event = await publish(redis_client, running, 6)

    async def both_logged() -> bool:
        return len(await attempts_of(running, event.id)) == 2

    await wait_for(both_logged, what="the fast delivery and the slow one's timeout")
    fast, slow = await attempts_of(running, event.id)  # in the order they were logged
    assert (fast["status_code"], fast["succeeded"]) == (200, True)
    assert (slow["status_code"], slow["error_kind"]) == (None, "timeout")


async def test_a_redirect_is_a_failed_attempt_and_is_not_followed(
    start_service: Any, receiver: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service()
    await add_endpoint(running, receiver, "/moved", "redirect", 200)
    event = await publish(redis_client, running, 7)

    async def done() -> bool:
        return [x["status_code"] for x in await attempts_of(running, event.id)] == [302, 200]

    await wait_for(done, what="a 302 failure, then the retry's 200")
    assert receiver.to("/redirect-target") == []


async def test_during_a_secret_rotation_both_secrets_verify(
    start_service: Any, receiver: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service()
    endpoint = await add_endpoint(running, receiver, "/rot", 200)
    rotated = await running.client.post(
        f"/v1/endpoints/{endpoint['id']}/secret/rotate", json={"grace_period_s": 3600}
    )
    receiver.trust("/rot", endpoint["secret"], rotated.json()["secret"])
    await publish(redis_client, running, 8)
    await wait_for(lambda: len(receiver.to("/rot")) == 1, what="the delivery")
    got = receiver.to("/rot")[0]
    assert got.verified_by == [0, 1]
    assert len(got.headers["webhook-signature"].split(" ")) == 2


async def test_an_endpoint_failing_longer_than_the_health_period_is_disabled(
    start_service: Any, receiver: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service(disable_after_failing_s=0.05, retry_schedule_ms=[100] * 5)
    endpoint = await add_endpoint(running, receiver, "/sick", 500)
    await publish(redis_client, running, 9)

    async def reported() -> bool:
        return bool(await outcomes(redis_client, running, "webhook.endpoint.disabled"))

    await wait_for(reported, what="the health rule to disable the endpoint")
    (disabled,) = await outcomes(redis_client, running, "webhook.endpoint.disabled")
    assert (disabled.data["endpoint_id"], disabled.data["reason"]) == (endpoint["id"], "failing")
    assert len(receiver.to("/sick")) == 2


async def test_a_redelivered_fan_out_does_not_deliver_twice(
    start_service: Any, receiver: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service()
    await add_endpoint(running, receiver, "/once", 200)
    source = make_event(10)
    assert running.service.container is not None
    tasks = await fan_out(source, running.service.container.cache)
    publisher = running.service.container.publisher
    await publisher.publish_many(tasks)
    await wait_for(lambda: len(receiver.to("/once")) == 1, what="the first delivery")
    stream_key = keys.stream_key(running.stream("webhook.delivery.requested"))

    async def acknowledged() -> bool:
        return (await redis_client.xpending(stream_key, "webhooks"))["pending"] == 0

    await wait_for(acknowledged, what="the first task to be acknowledged")
    # the same tasks again, as a fan-out redelivered after a crash before its ack publishes them
    await publisher.publish_many(await fan_out(source, running.service.container.cache))
    sentinel = await publish(redis_client, running, 11)
    await wait_for(
        lambda: any(r.headers["webhook-id"] == sentinel.id for r in receiver.to("/once")),
        what="a later event, delivered after the duplicate was read",
    )
    assert [r.headers["webhook-id"] for r in receiver.to("/once")].count(source.id) == 1


async def test_a_rate_limited_endpoint_gets_everything_paced_without_lost_attempts(
    start_service: Any, receiver: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service()
    await add_endpoint(running, receiver, "/paced", 200, rate_limit_per_s=2)
    deferred_before = counter(metrics.DEFERRED, "rate_limit")
    events = [await publish(redis_client, running, 20 + i) for i in range(4)]
    await wait_for(lambda: len(receiver.to("/paced")) == 4, what="all four deliveries")
    await wait_for(lambda: all_logged(running, events), what="every answer in the log")
    assert counter(metrics.DEFERRED, "rate_limit") > deferred_before
    for event in events:
        assert [x["attempt"] for x in await attempts_of(running, event.id)] == [1]


async def test_a_backlog_for_a_rate_limited_endpoint_waits_without_using_up_deliveries(
    start_service: Any, receiver: Any, redis_client: redis.asyncio.Redis
) -> None:
    # 4 deliveries allowed per task, while a queue of 8 at 4/s defers most tasks more often
    running = await start_service(max_deliveries=4)
    await add_endpoint(running, receiver, "/slow", 200, rate_limit_per_s=4)
    events = [await publish(redis_client, running, 40 + i) for i in range(8)]
    await wait_for(lambda: len(receiver.to("/slow")) == 8, what="all eight deliveries")
    await wait_for(lambda: all_logged(running, events), what="every answer in the log")
    for event in events:
        assert [x["attempt"] for x in await attempts_of(running, event.id)] == [1]
    tasks = running.stream("webhook.delivery.requested")
    dead = await redis_client.xlen(keys.dead_letter_key(tasks))
    assert dead == 0, "no task was dead-lettered for waiting"


async def test_replaying_one_delivery_sends_it_again(
    start_service: Any, receiver: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service()
    await add_endpoint(running, receiver, "/again", 200)
    event = await publish(redis_client, running, 30)

    async def delivered() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (
            await running.client.get(f"/v1/events/{event.id}/deliveries")
        ).json()["data"]
        return found

    async def has_succeeded() -> bool:
        return [d["status"] for d in await delivered()] == ["succeeded"]

    await wait_for(has_succeeded, what="the first delivery")
    (delivery,) = await delivered()
    answer = await running.client.post(f"/v1/deliveries/{delivery['delivery_id']}/replay")
    assert answer.status_code == 202
    await wait_for(lambda: len(receiver.to("/again")) == 2, what="the replay")
    assert {r.headers["webhook-id"] for r in receiver.to("/again")} == {event.id}


async def test_finished_deliveries_past_the_retention_are_pruned_from_the_log(
    start_service: Any, receiver: Any, redis_client: redis.asyncio.Redis
) -> None:
    # a retention of ~0.1 s (in days) and a pass every 50 ms: the delivery goes soon after
    running = await start_service(log_retention_days=1e-6, log_prune_interval_s=0.05)
    await add_endpoint(running, receiver, "/a", 200)
    before = counter(metrics.LOG_PRUNED)
    event = await publish(redis_client, running, 1)
    await wait_for(lambda: len(receiver.to("/a")) == 1, what="the delivery")

    # counted only for rows deleted, so this cannot pass before the delivery was logged
    await wait_for(lambda: counter(metrics.LOG_PRUNED) > before, what="a delivery pruned")
    assert await running.service.container.delivery_log.deliveries_for_event(event.id) == []
    assert await attempts_of(running, event.id) == []


async def test_the_endpoint_cache_lives_on_the_cache_redis_when_one_is_given(
    start_service: Any, receiver: Any, redis_client: redis.asyncio.Redis, own_redis: Any
) -> None:
    if isinstance(redis_client, RedisCluster):
        pytest.skip("REDIS_CLUSTER applies to both URLs: a single-node cache needs a single node")
    running = await start_service(cache_url=own_redis.url)
    await add_endpoint(running, receiver, "/a", 200)
    await publish(redis_client, running, 1)
    await wait_for(lambda: len(receiver.to("/a")) == 1, what="the delivery")
    pattern = f"*{running.settings.cache_namespace}*"
    cache_side = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        assert [key async for key in cache_side.scan_iter(match=pattern)], "cached there"
    finally:
        await cache_side.aclose()
    assert [key async for key in redis_client.scan_iter(match=pattern)] == []
