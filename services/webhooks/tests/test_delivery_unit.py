"""The delivery and fan-out use cases with in-memory fakes: no Redis, no database, no network.

The fakes keep the outbox as the SQL adapters do: an event is queued with the record it
reports (one call, one transaction there), at most once per event id.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from riverbed.errors import PermanentError, RetryLater
from riverbed_contracts import CloudEvent, DeliverWebhook, WebhookEvent
from riverbed_webhooks.domain.matching import delivery_id, matching_endpoint_ids
from riverbed_webhooks.domain.model import (
    Attempt,
    Delivery,
    DeliveryStatus,
    DisabledReason,
    Endpoint,
)
from riverbed_webhooks.domain.outcomes import (
    disabled_event_id,
    exhausted_event_id,
    succeeded_event_id,
)
from riverbed_webhooks.domain.retry import RetrySchedule
from riverbed_webhooks.domain.signing import generate_secret
from riverbed_webhooks.service_layer.delivery import Deliverer, DeliveryPolicy
from riverbed_webhooks.service_layer.fanout import fan_out
from riverbed_webhooks.service_layer.ports import SendResult, WebhookRequest

T0 = datetime.now(UTC).replace(microsecond=0)  # receivers check the timestamp's age


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Outbox:
    """Queued events by id, in order: what the outbox table would hold."""

    events: dict[str, CloudEvent] = field(default_factory=dict)

    def queue(self, events: Sequence[CloudEvent]) -> None:
        for queued in events:
            self.events.setdefault(queued.id, queued)  # ON CONFLICT (event_id) DO NOTHING

    def of_type(self, event_type: str) -> list[CloudEvent]:
        return [e for e in self.events.values() if e.type == event_type]


@dataclass
class FakeRepository:
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    failing_since: dict[str, datetime] = field(default_factory=dict)
    outbox: Outbox = field(default_factory=Outbox)

    async def get(self, endpoint_id: str) -> Endpoint | None:
        return self.endpoints.get(endpoint_id)

    async def list_enabled(self) -> list[Endpoint]:
        return [e for e in self.endpoints.values() if e.enabled]

    async def disable(
        self,
        endpoint_id: str,
        reason: DisabledReason,
        at: datetime,
        *,
        report: CloudEvent | None = None,
    ) -> Endpoint | None:
        current = self.endpoints.get(endpoint_id)
        if current is None or not current.enabled:
            return None
        self.endpoints[endpoint_id] = current.model_copy(
            update={"enabled": False, "disabled_reason": reason, "disabled_at": at}
        )
        self.outbox.queue([report] if report else [])
        return self.endpoints[endpoint_id]

    async def record_failure(self, endpoint_id: str, at: datetime) -> datetime | None:
        return self.failing_since.setdefault(endpoint_id, at)

    async def record_success(self, endpoint_id: str, at: datetime) -> None:
        self.failing_since.pop(endpoint_id, None)


@dataclass
class FakeLog:
    outbox: Outbox
    attempts: list[Attempt] = field(default_factory=list)
    deliveries: dict[str, Delivery] = field(default_factory=dict)

    async def begin_task(self, delivery: Delivery) -> None:
        self.deliveries[delivery.delivery_id] = delivery

    async def record_attempt(
        self, attempt: Attempt, status: DeliveryStatus, *, emit: Sequence[CloudEvent] = (),
        **_: Any,
    ) -> None:  # fmt: skip
        self.attempts.append(attempt)
        self.deliveries[attempt.delivery_id] = self.deliveries[attempt.delivery_id].model_copy(
            update={"status": status}
        )
        self.outbox.queue(emit)

    async def set_status(
        self, delivery_id: str, status: DeliveryStatus, *, emit: Sequence[CloudEvent] = (),
        **_: Any,
    ) -> None:  # fmt: skip
        self.deliveries[delivery_id] = self.deliveries[delivery_id].model_copy(
            update={"status": status}
        )
        self.outbox.queue(emit)

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        return self.deliveries.get(delivery_id)

    async def attempts_in_task(self, task_id: str) -> int:
        return sum(a.task_id == task_id for a in self.attempts)

    def status(self, delivery_id: str) -> DeliveryStatus:
        return self.deliveries[delivery_id].status


@dataclass
class FakeCache:
    repository: FakeRepository
    invalidated: list[str] = field(default_factory=list)

    async def endpoint(self, endpoint_id: str) -> Endpoint | None:
        return await self.repository.get(endpoint_id)

    async def endpoint_ids_for(self, event_type: str) -> list[str]:
        return matching_endpoint_ids(await self.repository.list_enabled(), event_type)

    async def invalidate(self, endpoint_id: str) -> None:
        self.invalidated.append(endpoint_id)


@dataclass
class ScriptedSender:
    """Answers from a script (the last answer repeats) and records every request."""

    answers: list[SendResult]
    requests: list[WebhookRequest] = field(default_factory=list)

    async def send(self, request: WebhookRequest) -> SendResult:
        self.requests.append(request)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@dataclass
class FakeLimiter:
    wait_ms: int = 0
    asked: int = 0

    async def acquire(self, endpoint_id: str, per_second: int) -> int:
        self.asked += 1
        return self.wait_ms


@dataclass
class FakeGate:
    full: bool = False
    held: int = 0

    def try_acquire(self, endpoint_id: str, cap: int) -> bool:
        if self.full:
            return False
        self.held += 1
        return True

    def release(self, endpoint_id: str) -> None:
        self.held -= 1


def status(code: int, retry_after: str | None = None) -> SendResult:
    return SendResult(status_code=code, duration_ms=12, retry_after=retry_after, body="ok")


TIMEOUT = SendResult(None, 15_000, error="no answer within 15 s", error_kind="timeout")


@dataclass
class World:
    deliverer: Deliverer
    repository: FakeRepository
    log: FakeLog
    sender: ScriptedSender
    limiter: FakeLimiter
    gate: FakeGate
    outbox: Outbox
    clock: Clock
    endpoint: Endpoint
    task_created: datetime = T0  # the tasks' CloudEvent time: when fan-out made them

    def task(self, event_id: str = "evt_1") -> tuple[DeliverWebhook, CloudEvent]:
        payload = DeliverWebhook(
            delivery_id=delivery_id(event_id, self.endpoint.id),
            endpoint_id=self.endpoint.id,
            event=WebhookEvent(id=event_id, type="payment.succeeded.v1", time=T0, data={"a": 1}),
        )
        return payload, CloudEvent(
            id=f"task-{event_id}",
            type="webhook.delivery.requested.v1",
            data=payload.model_dump(mode="json"),
            time=self.task_created,
        )

    async def deliver(self, event_id: str = "evt_1") -> list[CloudEvent]:
        """Deliver the task; the events it queued in the outbox (none already there)."""
        payload, event = self.task(event_id)
        before = set(self.outbox.events)
        await self.deliverer.deliver(payload, task_id=event.id, cause=event)
        return [e for i, e in self.outbox.events.items() if i not in before]


def make_world(
    answers: list[SendResult],
    *,
    schedule: tuple[int, ...] = (5_000, 300_000),
    disable_after: timedelta = timedelta(days=5),
    **endpoint_fields: Any,
) -> World:
    clock = Clock()
    endpoint = Endpoint(
        id="ep_1",
        url="https://hooks.example.com/in",
        secret=generate_secret(),
        created_at=T0,
        updated_at=T0,
        **endpoint_fields,
    )
    outbox = Outbox()
    repository = FakeRepository({endpoint.id: endpoint}, outbox=outbox)
    log, sender = FakeLog(outbox), ScriptedSender(answers)
    limiter, gate = FakeLimiter(), FakeGate()
    deliverer = Deliverer(
        cache=FakeCache(repository),
        repository=repository,
        log=log,
        sender=sender,
        limiter=limiter,
        gate=gate,
        clock=clock,
        policy=DeliveryPolicy(
            schedule=RetrySchedule(schedule, jitter=0),
            retry_after_cap_ms=3_600_000,
            disable_after=disable_after,
            default_concurrency=10,
            deferral_base_ms=100,
            deferral_max_ms=1_000,
        ),
        rng=random.Random(0),
    )
    return World(deliverer, repository, log, sender, limiter, gate, outbox, clock, endpoint)


async def test_a_2xx_is_success_reported_with_delivery_succeeded() -> None:
    world = make_world([status(204)])
    events = await world.deliver()
    (request,) = world.sender.requests
    Webhook(world.endpoint.secret).verify(request.body, request.headers)
    assert request.headers["webhook-id"] == "evt_1"
    assert [e.type for e in events] == ["webhook.delivery.succeeded.v1"]
    assert events[0].id == succeeded_event_id(delivery_id("evt_1", "ep_1"), "task-evt_1")
    assert events[0].data["status_code"] == 204
    assert events[0].causationid == "task-evt_1"
    assert world.log.status(delivery_id("evt_1", "ep_1")) is DeliveryStatus.SUCCEEDED
    assert world.gate.held == 0


async def test_a_500_is_retried_after_the_scheduled_delay() -> None:
    world = make_world([status(500)])
    with pytest.raises(RetryLater) as retry:
        await world.deliver()
    assert retry.value.delay_ms == 5_000
    with pytest.raises(RetryLater) as retry:
        await world.deliver()
    assert retry.value.delay_ms == 300_000
    assert [a.attempt for a in world.log.attempts] == [1, 2]
    assert world.log.status(delivery_id("evt_1", "ep_1")) is DeliveryStatus.RETRYING


async def test_the_same_webhook_id_and_body_are_sent_on_every_attempt() -> None:
    world = make_world([status(500), status(200)])
    with pytest.raises(RetryLater):
        await world.deliver()
    world.clock.now += timedelta(seconds=5)
    await world.deliver()
    first, second = world.sender.requests
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.headers["webhook-timestamp"] != second.headers["webhook-timestamp"]


async def test_retry_after_on_429_sets_the_next_delay() -> None:
    world = make_world([status(429, retry_after="42")])
    with pytest.raises(RetryLater) as retry:
        await world.deliver()
    assert retry.value.delay_ms == 42_000


async def test_410_disables_the_endpoint_at_once_and_reports_it() -> None:
    world = make_world([status(410)])
    events = await world.deliver()
    assert [e.type for e in events] == ["webhook.endpoint.disabled.v1"]
    assert events[0].data["reason"] == "gone"
    assert events[0].id == disabled_event_id("ep_1", T0)
    assert not world.repository.endpoints["ep_1"].enabled
    assert world.log.status(delivery_id("evt_1", "ep_1")) is DeliveryStatus.DROPPED


async def test_after_the_last_attempt_the_task_is_exhausted_reported_and_dead_lettered() -> None:
    world = make_world([TIMEOUT], schedule=(10, 10))
    for _ in range(2):
        with pytest.raises(RetryLater):
            await world.deliver()
    with pytest.raises(PermanentError, match="exhausted after 3 attempts"):
        await world.deliver()
    (exhausted,) = world.outbox.events.values()
    assert exhausted.type == "webhook.delivery.exhausted.v1"
    assert exhausted.id == exhausted_event_id("task-evt_1")
    assert exhausted.data["attempts"] == 3
    assert "last_status_code" not in exhausted.data
    assert world.log.status(delivery_id("evt_1", "ep_1")) is DeliveryStatus.EXHAUSTED


async def test_an_endpoint_failing_for_the_whole_period_is_disabled() -> None:
    world = make_world([status(503)], schedule=(1,) * 20, disable_after=timedelta(days=5))
    with pytest.raises(RetryLater):
        await world.deliver()
    world.clock.now += timedelta(days=4)
    with pytest.raises(RetryLater):
        await world.deliver()
    world.clock.now += timedelta(days=1)
    events = await world.deliver()
    assert [e.type for e in events] == ["webhook.endpoint.disabled.v1"]
    assert events[0].data["reason"] == "failing"
    assert datetime.fromisoformat(events[0].data["failing_since"]) == T0


async def test_a_success_resets_the_failure_clock() -> None:
    world = make_world([status(500), status(200), status(500)], schedule=(1,) * 5)
    with pytest.raises(RetryLater):
        await world.deliver("evt_1")
    world.clock.now += timedelta(days=4)
    await world.deliver("evt_1")
    world.clock.now += timedelta(days=2)
    with pytest.raises(RetryLater):
        await world.deliver("evt_2")  # 6 days after the first failure, but 2 after a success
    assert world.repository.endpoints["ep_1"].enabled


async def test_over_the_rate_limit_the_task_is_put_back_without_an_attempt() -> None:
    world = make_world([status(200)], rate_limit_per_s=2)
    world.limiter.wait_ms = 400
    with pytest.raises(RetryLater) as retry:
        await world.deliver()
    assert 400 <= retry.value.delay_ms <= 440
    assert retry.value.counts_as_delivery is False
    assert world.sender.requests == []
    assert world.log.attempts == []
    assert world.gate.held == 0
    world.limiter.wait_ms = 0
    await world.deliver()
    assert world.log.attempts[0].attempt == 1  # the deferral was not an attempt


async def test_an_endpoint_at_its_concurrency_cap_is_deferred_without_an_attempt() -> None:
    world = make_world([status(200)])
    world.gate.full = True
    with pytest.raises(RetryLater) as fresh:
        await world.deliver()
    assert fresh.value.counts_as_delivery is False
    assert 50 <= fresh.value.delay_ms <= 150, "a new task waits the base (100 ms)"
    world.clock.now += timedelta(milliseconds=600)  # the task has waited 600 ms
    with pytest.raises(RetryLater) as older:
        await world.deliver()
    assert 300 <= older.value.delay_ms <= 900, "about as long again, so queues thin out"
    assert world.sender.requests == []
    assert world.limiter.asked == 0


async def test_tasks_for_a_disabled_or_deleted_endpoint_are_dropped() -> None:
    world = make_world([status(200)], enabled=False)
    assert await world.deliver() == []
    assert world.log.status(delivery_id("evt_1", "ep_1")) is DeliveryStatus.DROPPED
    world.repository.endpoints.clear()
    assert await world.deliver("evt_2") == []
    assert world.sender.requests == []


async def test_fan_out_makes_one_task_per_matching_endpoint_with_stable_ids() -> None:
    world = make_world([status(200)], event_types=("payment.*",))
    other = world.endpoint.model_copy(update={"id": "ep_2", "event_types": ("email.*",)})
    third = world.endpoint.model_copy(update={"id": "ep_3", "event_types": ()})
    world.repository.endpoints.update({"ep_2": other, "ep_3": third})
    source = CloudEvent(id="evt_9", type="payment.succeeded.v1", data={"x": 1}, correlationid="c")
    cache = FakeCache(world.repository)
    tasks = await fan_out(source, cache)
    assert [t.data["endpoint_id"] for t in tasks] == ["ep_1", "ep_3"]
    assert all(t.type == "webhook.delivery.requested.v1" for t in tasks)
    assert all(t.causationid == "evt_9" and t.correlationid == "c" for t in tasks)
    body = tasks[0].data["event"]
    assert (body["id"], body["type"], body["data"]) == ("evt_9", "payment.succeeded.v1", {"x": 1})
    assert datetime.fromisoformat(body["time"]) == source.time
    again = await fan_out(source, cache)
    assert [t.id for t in again] == [t.id for t in tasks]


async def test_a_duplicate_of_a_concluded_task_is_skipped() -> None:
    world = make_world([status(200)])
    await world.deliver()
    assert await world.deliver() == []
    assert len(world.sender.requests) == 1


async def test_a_concluded_task_redelivered_queues_no_second_report() -> None:
    # the outcome and its report were committed together; the acknowledgement was lost
    world = make_world([status(200)])
    (first,) = await world.deliver()
    assert await world.deliver() == []
    assert list(world.outbox.events.values()) == [first]


async def test_one_task_succeeding_twice_reports_one_fact() -> None:
    # two consumers ran the same task at once (a reclaim while the first was still sending):
    # both succeed and record; the report has one id, so the outbox keeps one
    world = make_world([status(200)])
    payload, event = world.task()
    both = [world.deliverer.deliver(payload, task_id=event.id, cause=event) for _ in range(2)]
    for delivery in both:
        await delivery
        world.log.deliveries[payload.delivery_id] = world.log.deliveries[
            payload.delivery_id
        ].model_copy(update={"status": DeliveryStatus.RETRYING})  # the other saw it open
    assert len(world.sender.requests) == 2
    assert len(world.outbox.of_type("webhook.delivery.succeeded.v1")) == 1


async def test_a_replay_that_succeeds_again_is_a_new_fact() -> None:
    world = make_world([status(200)])
    payload, first_task = world.task()
    await world.deliverer.deliver(payload, task_id=first_task.id, cause=first_task)
    replay = first_task.model_copy(update={"id": "task-replay"})
    await world.deliverer.deliver(payload, task_id=replay.id, cause=replay)
    ids = [e.id for e in world.outbox.of_type("webhook.delivery.succeeded.v1")]
    assert ids == [
        succeeded_event_id(payload.delivery_id, first_task.id),
        succeeded_event_id(payload.delivery_id, "task-replay"),
    ]


async def test_an_exhausted_task_not_dead_lettered_keeps_its_first_report() -> None:
    world = make_world([TIMEOUT], schedule=(10,))
    with pytest.raises(RetryLater):
        await world.deliver()
    with pytest.raises(PermanentError):
        await world.deliver()
    # dead-lettering failed (Redis away): the task comes back past its last attempt
    with pytest.raises(PermanentError, match="exhausted after 2 attempts"):
        await world.deliver()
    assert len(world.sender.requests) == 2, "no third request"
    (report,) = world.outbox.events.values()
    assert report.id == exhausted_event_id("task-evt_1")
    assert report.data["attempts"] == 2, "the first report, queued with the last attempt"


class CrashingLog(FakeLog):
    """A log whose process 'dies' while recording the next attempt."""

    crash = True

    async def record_attempt(
        self, attempt: Attempt, status: DeliveryStatus, **options: Any
    ) -> None:
        if self.crash:
            self.crash = False
            raise ConnectionError("killed before the attempt was recorded")
        await super().record_attempt(attempt, status, **options)


async def test_a_crash_after_a_410_disabling_still_reports_it_and_drops_the_task() -> None:
    world = make_world([status(410)])
    crashing = CrashingLog(world.outbox, deliveries=world.log.deliveries)
    world.deliverer.log = world.log = crashing
    with pytest.raises(ConnectionError):
        await world.deliver()
    (report,) = world.outbox.events.values()
    assert (report.type, report.data["reason"]) == ("webhook.endpoint.disabled.v1", "gone")
    assert await world.deliver() == [], "the redelivery: dropped, nothing reported twice"
    assert world.log.status(delivery_id("evt_1", "ep_1")) is DeliveryStatus.DROPPED
    assert len(world.sender.requests) == 1
