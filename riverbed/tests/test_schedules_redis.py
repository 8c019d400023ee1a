"""Recurring schedules on a real Redis (or Redis Cluster): idempotent upserts, remove, pause
and resume, exactly-once publishing by racing schedulers, the misfire rule, moves between
streams, and what an interrupted write leaves behind.

Time is an injected clock the tests move by hand; no test waits for real time to pass.
Each test keeps its schedules in an index of its own and routes their events to streams
named with its own token, and deletes every key it wrote.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio
from prometheus_client import REGISTRY

from riverbed import keys
from riverbed.connection import connect
from riverbed.schedules import (
    ScheduleDefinition,
    Scheduler,
    ScheduleStore,
    occurrence_event_id,
)
from riverbed.service import Service
from riverbed.settings import RedisSettings, ServiceSettings
from riverbed.testing import RedisServer, wait_for

pytestmark = pytest.mark.integration

#: 2026-01-01T00:00:00Z: a whole day, hour and minute, so interval occurrences are round
T0 = 1_767_225_600
PAYMENT = {"provider": "stripe", "provider_payment_id": "pi_1", "amount": 100, "currency": "EUR"}
EMAIL = {"to": "ada@example.com", "subject": "Digest", "text": "Hello"}


class Clock:
    """Seconds since the epoch, moved only by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def at(self, seconds_after_t0: float) -> None:
        self.now = T0 + seconds_after_t0


@dataclass
class Env:
    redis: redis.asyncio.Redis
    unique: str
    clock: Clock = field(default_factory=lambda: Clock(T0 + 0.5))
    names: set[str] = field(default_factory=set)

    @property
    def index_key(self) -> str:
        return keys.schedule_index_key(f"test-{self.unique}")

    @property
    def payments(self) -> str:
        """Where this test's payment.succeeded events go."""
        return f"sched-pay.{self.unique}"

    @property
    def emails(self) -> str:
        return f"sched-mail.{self.unique}"

    def store(self) -> ScheduleStore:
        routes = {"payment.succeeded": self.payments, "email.requested": self.emails}
        return ScheduleStore(self.redis, index_key=self.index_key, routes=routes, clock=self.clock)

    def scheduler(self, client: redis.asyncio.Redis | None = None) -> Scheduler:
        return Scheduler(client or self.redis, index_key=self.index_key, clock=self.clock)

    def name(self, label: str) -> str:
        name = f"{label}-{self.unique}"
        self.names.add(name)
        return name

    def payment_schedule(self, name: str, **overrides: Any) -> ScheduleDefinition:
        values: dict[str, Any] = {"type": "payment.succeeded.v1", "data": PAYMENT, "every_s": 60}
        values.update(overrides)
        return ScheduleDefinition(name=name, **values)

    async def events(self, stream: str) -> list[dict[str, Any]]:
        entries = await self.redis.xrange(keys.stream_key(stream))
        return [json.loads(fields[b"event"]) for _, fields in entries]

    async def clean(self) -> None:
        doomed = [self.index_key]
        for stream in (self.payments, self.emails):
            doomed.append(keys.stream_key(stream))
            doomed += [keys.schedule_key(stream, name) for name in self.names]
        for key in doomed:  # one at a time: they are in different cluster slots
            await self.redis.delete(key)


@pytest.fixture
async def env(redis_client: redis.asyncio.Redis, unique: str) -> AsyncIterator[Env]:
    created = Env(redis_client, unique)
    yield created
    await created.clean()


def at(seconds_after_t0: int) -> int:
    """An occurrence time, ms."""
    return (T0 + seconds_after_t0) * 1000


def sample(metric: str, name: str) -> float | None:
    return REGISTRY.get_sample_value(metric, {"schedule": name})


# -- upsert ------------------------------------------------------------------------------


async def test_the_same_definition_again_changes_nothing_and_fires_nothing(env: Env) -> None:
    store, name = env.store(), env.name("daily")
    created = await store.upsert(env.payment_schedule(name))
    assert created.outcome == "created"
    assert created.schedule.state is not None
    assert created.schedule.state.next_ms == at(60)

    env.clock.at(30)
    again = await store.upsert(env.payment_schedule(name))
    assert again.outcome == "unchanged"
    assert again.schedule.state is not None
    assert again.schedule.state.next_ms == at(60), "the next fire time did not move"
    assert await env.scheduler().tick() == []
    assert await env.events(env.payments) == []

    env.clock.at(60.5)
    fired = await env.scheduler().tick()
    assert [f.occurrence_ms for f in fired] == [at(60)]
    assert (await store.upsert(env.payment_schedule(name))).outcome == "unchanged"
    assert await env.scheduler().tick() == []
    events = await env.events(env.payments)
    assert [e["id"] for e in events] == [occurrence_event_id(name, at(60))]
    assert events[0]["type"] == "payment.succeeded.v1"
    assert events[0]["data"] == PAYMENT
    assert events[0]["time"] == "2026-01-01T00:01:00Z"


async def test_a_changed_schedule_never_publishes_an_occurrence_twice(env: Env) -> None:
    store, scheduler, name = env.store(), env.scheduler(), env.name("changing")
    await store.upsert(env.payment_schedule(name))
    env.clock.at(60.5)
    assert len(await scheduler.tick()) == 1

    changed = await store.upsert(env.payment_schedule(name, data={**PAYMENT, "amount": 200}))
    assert changed.outcome == "updated"
    assert changed.schedule.state is not None
    assert changed.schedule.state.next_ms == at(120)
    # a cron matching the minute already published: still not published again
    minutely = env.payment_schedule(name, every_s=None, cron="* * * * *", data=PAYMENT)
    assert (await store.upsert(minutely)).outcome == "updated"
    assert await scheduler.tick() == []

    env.clock.at(120.5)
    assert [f.occurrence_ms for f in await scheduler.tick()] == [at(120)]
    ids = [e["id"] for e in await env.events(env.payments)]
    assert ids == [occurrence_event_id(name, at(60)), occurrence_event_id(name, at(120))]


async def test_remove_stops_a_schedule(env: Env) -> None:
    store, scheduler, name = env.store(), env.scheduler(), env.name("removed")
    await store.upsert(env.payment_schedule(name))
    env.clock.at(60.5)
    assert len(await scheduler.tick()) == 1

    assert await store.remove(name) is True
    assert await store.get(name) is None
    assert not await env.redis.exists(keys.schedule_key(env.payments, name))
    env.clock.at(600.5)
    assert await scheduler.tick() == []
    assert len(await env.events(env.payments)) == 1
    assert await store.remove(name) is False


async def test_pause_skips_occurrences_and_resume_continues_with_the_next_future_one(
    env: Env,
) -> None:
    store, scheduler, name = env.store(), env.scheduler(), env.name("paused")
    await store.upsert(env.payment_schedule(name))
    paused = await store.pause(name)
    assert paused is not None
    assert paused.status == "paused"

    env.clock.at(210.5)  # past three occurrences
    assert await scheduler.tick() == []
    resumed = await store.resume(name)
    assert resumed is not None
    assert resumed.status == "active"
    assert resumed.state is not None
    assert resumed.state.next_ms == at(240), "what fell while paused is not caught up"
    assert await scheduler.tick() == []

    env.clock.at(240.5)
    fired = await scheduler.tick()
    assert [(f.occurrence_ms, f.missed) for f in fired] == [(at(240), 0)]
    assert await store.pause("no-such-schedule") is None


# -- exactly once ------------------------------------------------------------------------


async def test_two_schedulers_publish_each_of_200_occurrences_exactly_once(
    env: Env, redis_url: str
) -> None:
    store, name = env.store(), env.name("raced")
    await store.upsert(env.payment_schedule(name, every_s=1))
    other_client = connect(RedisSettings(url=redis_url))  # its own connections
    try:
        first, second = env.scheduler(), env.scheduler(other_client)
        won = {"first": 0, "second": 0}
        for step in range(1, 201):
            env.clock.at(step + 0.5)
            # both passes read the state before either script runs; who sends first alternates
            if step % 2:
                mine, theirs = await asyncio.gather(first.tick(), second.tick())
            else:
                theirs, mine = await asyncio.gather(second.tick(), first.tick())
            assert len(mine) + len(theirs) == 1, f"occurrence {step} published once"
            won["first"] += len(mine)
            won["second"] += len(theirs)
    finally:
        await other_client.aclose()

    events = await env.events(env.payments)
    assert len(events) == 200
    assert [e["id"] for e in events] == [occurrence_event_id(name, at(s)) for s in range(1, 201)]
    view = await store.get(name)
    assert view is not None
    assert view.state is not None
    assert (view.state.fired, view.state.missed) == (200, 0)
    lost = first.races_lost + second.races_lost
    assert lost > 0, "the schedulers did race for occurrences"
    print(f"occurrences won: {won}; races lost: {lost}")


async def test_after_downtime_only_the_most_recent_missed_occurrence_is_published(
    env: Env,
) -> None:
    store, name = env.store(), env.name("restarted")
    await store.upsert(env.payment_schedule(name))
    env.clock.at(60.5)
    assert len(await env.scheduler().tick()) == 1
    skipped_before = sample("riverbed_schedule_misfires_skipped_total", name) or 0.0

    env.clock.at(690.5)  # every scheduler was down for ten occurrences
    restarted = env.scheduler()
    fired = await restarted.tick()
    assert [(f.occurrence_ms, f.missed, f.next_ms) for f in fired] == [(at(660), 9, at(720))]
    assert await restarted.tick() == []
    assert sample("riverbed_schedule_misfires_skipped_total", name) == skipped_before + 9

    env.clock.at(720.5)
    assert [f.occurrence_ms for f in await restarted.tick()] == [at(720)]
    ids = [e["id"] for e in await env.events(env.payments)]
    assert ids == [occurrence_event_id(name, at(s)) for s in (60, 660, 720)]
    view = await store.get(name)
    assert view is not None
    assert view.as_json()["misfires_skipped"] == 9


async def test_a_schedule_that_cannot_fire_does_not_stall_the_others(env: Env) -> None:
    store, scheduler = env.store(), env.scheduler()
    broken, fine = env.name("broken"), env.name("fine")
    await store.upsert(env.payment_schedule(broken))
    await store.upsert(env.payment_schedule(fine, type="email.requested.v1", data=EMAIL))
    await env.redis.set(keys.stream_key(env.payments), "not a stream")  # XADD: WRONGTYPE

    env.clock.at(60.5)
    assert [f.name for f in await scheduler.tick()] == [fine]
    await env.redis.delete(keys.stream_key(env.payments))
    assert [f.name for f in await scheduler.tick()] == [broken], "retried on the next pass"


async def test_a_limit_finishes_the_schedule(env: Env) -> None:
    store, scheduler, name = env.store(), env.scheduler(), env.name("limited")
    await store.upsert(env.payment_schedule(name, limit=2))
    for minute in (1, 2, 3, 4):
        env.clock.at(minute * 60 + 0.5)
        await scheduler.tick()
    view = await store.get(name)
    assert view is not None
    assert view.status == "finished"
    assert view.as_json()["next_fire"] is None
    assert len(await env.events(env.payments)) == 2
    assert sample("riverbed_schedule_next_fire_timestamp_seconds", name) is None


async def test_the_scheduler_loop_publishes_as_the_clock_moves(env: Env) -> None:
    store, name = env.store(), env.name("looped")
    await store.upsert(env.payment_schedule(name))
    scheduler = Scheduler(env.redis, index_key=env.index_key, poll_interval_s=0.01, clock=env.clock)
    scheduler.start()
    try:

        async def published(count: int) -> bool:
            return int(await env.redis.xlen(keys.stream_key(env.payments))) == count

        env.clock.at(60.5)
        await wait_for(lambda: published(1), what="the first occurrence")
        env.clock.at(120.5)
        await wait_for(lambda: published(2), what="the second occurrence")
        assert scheduler.running

        def exported() -> bool:  # the gauges are set as the pass ends, after the publish
            return sample("riverbed_schedule_next_fire_timestamp_seconds", name) == T0 + 180

        await wait_for(exported, what="the gauges of the pass that published")
        assert sample("riverbed_schedule_last_fire_timestamp_seconds", name) == T0 + 120
    finally:
        await scheduler.stop()
    assert not scheduler.running


async def test_stop_ends_the_loop_wherever_the_cancellation_lands(env: Env) -> None:
    # redis-py's client can swallow a cancellation that arrives inside a command; the loop
    # must end anyway, or a service's shutdown would hang
    store = env.store()
    for label in ("a", "b", "c"):
        await store.upsert(env.payment_schedule(env.name(label)))
    for attempt in range(40):
        scheduler = Scheduler(
            env.redis, index_key=env.index_key, poll_interval_s=0.001, clock=env.clock
        )
        scheduler.start()
        for _ in range(attempt % 8):  # land the cancellation at varying points of a pass
            await asyncio.sleep(0.001)
        await asyncio.wait_for(scheduler.stop(), timeout=10)
        assert not scheduler.running


# -- moves and interrupted writes ----------------------------------------------------------


async def test_a_type_on_another_stream_moves_the_schedule_with_its_history(env: Env) -> None:
    store, scheduler, name = env.store(), env.scheduler(), env.name("moved")
    await store.upsert(env.payment_schedule(name))
    env.clock.at(60.5)
    assert len(await scheduler.tick()) == 1

    moved = await store.upsert(env.payment_schedule(name, type="email.requested.v1", data=EMAIL))
    assert moved.outcome == "updated"
    assert moved.schedule.stream == env.emails
    assert moved.schedule.state is not None
    assert (moved.schedule.state.fired, moved.schedule.state.last_ms) == (1, at(60))
    assert moved.schedule.state.moved_from is None
    assert not await env.redis.exists(keys.schedule_key(env.payments, name))
    assert await scheduler.tick() == [], "the occurrence published before the move stays done"

    env.clock.at(120.5)
    assert [f.stream for f in await scheduler.tick()] == [env.emails]
    assert len(await env.events(env.payments)) == 1
    assert [e["type"] for e in await env.events(env.emails)] == ["email.requested.v1"]


async def test_an_index_entry_without_state_is_listed_skipped_and_repaired(env: Env) -> None:
    store, name = env.store(), env.name("half-created")
    # a process died between writing the index entry and the state
    await env.redis.hset(env.index_key, name, env.payments)
    [view] = await store.list()
    assert (view.name, view.status, view.state) == (name, "missing", None)
    env.clock.at(600.5)
    assert await env.scheduler().tick() == []

    assert (await store.upsert(env.payment_schedule(name))).outcome == "created"
    assert [v.status for v in await store.list()] == ["active"]
    assert await store.remove(name) is True
    await env.redis.hset(env.index_key, name, env.payments)
    assert await store.remove(name) is True, "a missing state is removed too"
    assert await store.list() == []


async def test_an_interrupted_move_fires_nothing_until_an_upsert_finishes_it(env: Env) -> None:
    store, scheduler, name = env.store(), env.scheduler(), env.name("half-moved")
    await store.upsert(env.payment_schedule(name))
    # a move towards the email stream died right after retiring the old state
    await env.redis.hset(keys.schedule_key(env.payments, name), "moving", env.emails)
    [view] = await store.list()
    assert view.status == "moving"
    env.clock.at(600.5)
    assert await scheduler.tick() == []
    assert await env.events(env.payments) == []

    finished = await store.upsert(env.payment_schedule(name, type="email.requested.v1", data=EMAIL))
    assert finished.schedule.stream == env.emails
    assert finished.schedule.status == "active"
    assert not await env.redis.exists(keys.schedule_key(env.payments, name))
    env.clock.at(660.5)
    assert [f.occurrence_ms for f in await scheduler.tick()] == [at(660)]


# -- a service runs it ---------------------------------------------------------------------


async def test_a_service_started_with_run_scheduler_publishes_due_occurrences(
    own_redis: RedisServer, unique: str
) -> None:
    settings = RedisSettings(url=own_redis.url)
    client = connect(settings)
    service = Service(
        ServiceSettings(service_name="scheduling"), redis_settings=settings, run_scheduler=True
    )
    try:
        name = f"service-{unique}"
        definition = ScheduleDefinition(
            name=name, type="payment.succeeded.v1", data=PAYMENT, every_s=1
        )
        await ScheduleStore(client).upsert(definition)  # the default index, real time
        await service.start()
        stream_key = keys.stream_key("payment.succeeded")

        async def published() -> bool:
            return int(await client.xlen(stream_key)) >= 1

        await wait_for(published, what="the service's scheduler publishing an occurrence")
        [(_, fields)] = (await client.xrange(stream_key))[:1]
        assert json.loads(fields[b"event"])["source"] == f"urn:riverbed:schedule:{name}"
    finally:
        await service.stop()
        await client.aclose()
