"""The scheduler: a background loop that publishes the occurrences that are due.

Any number of replicas may run it over the same Redis. Each pass reads the index and
the states, and for each due schedule runs one script (:data:`~riverbed.schedules.store.FIRE`)
that appends the occurrence's event to the stream and advances the state, only if the
state is still at the version the pass read: of two schedulers racing for an occurrence
exactly one publishes it, and a crash leaves the event and the advanced state together
or neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import structlog
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from riverbed import eventloop, keys, metrics
from riverbed.connection import Redis
from riverbed.schedules.state import StoredState
from riverbed.schedules.store import FIRE, ScheduleStore
from riverbed.schedules.timing import iso, plan_fire
from riverbed_contracts import ENTRY_FIELD

log = structlog.get_logger(__name__)

#: shortest pause between passes, s: a pass that finds an occurrence due a few ms from
#: now waits that long rather than spinning
_MIN_PAUSE_S = 0.01


class SchedulerSettings(BaseSettings):
    """``RIVERBED_SCHEDULER_*``: how often the scheduler looks for due occurrences."""

    model_config = SettingsConfigDict(env_prefix="RIVERBED_SCHEDULER_", extra="ignore")

    poll_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="longest pause between passes, s: how soon a new or changed schedule "
        "is noticed (a pass also wakes at the earliest known due time)",
    )


@dataclass(frozen=True)
class Fired:
    """One occurrence this scheduler published."""

    name: str
    stream: str
    occurrence_ms: int
    event_id: str
    entry_id: str
    missed: int  # older due occurrences skipped by the misfire rule
    next_ms: int | None  # the occurrence it waits for now; None: finished


class Scheduler:
    """Publishes due occurrences; ``start()``/``stop()`` run :meth:`run` in a task.

    ``clock``: seconds since the epoch (tests inject one to drive time).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        index_key: str | None = None,
        poll_interval_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.store = ScheduleStore(redis, index_key=index_key, clock=clock)
        self.poll_interval_s = (
            poll_interval_s if poll_interval_s is not None else SchedulerSettings().poll_interval_s
        )
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._earliest_due_ms: int | None = None
        #: schedule name -> (last, next) fire time (ms) this process's gauges show
        self._exported: dict[str, tuple[int | None, int | None]] = {}
        self._undecodable: set[str] = set()  # warned once each
        #: due occurrences this scheduler tried to publish and found taken: a sibling
        #: published them first, or the schedule changed in between
        self.races_lost = 0

    def _now_ms(self) -> int:
        return round(self.clock() * 1000)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="scheduler")

    async def stop(self) -> None:
        """Stop the loop. A pass cut off mid-script loses nothing: the script either ran
        whole in Redis or not at all."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})  # not `await task`: that would raise its cancellation

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run(self) -> None:
        """Pass after pass until cancelled; a failed pass is logged and retried after the
        poll interval (no hot loop while Redis is away)."""
        while True:
            try:
                await self.tick()
            except Exception as error:
                self._earliest_due_ms = None
                log.warning(
                    "scheduler pass failed", error_type=type(error).__name__, error=str(error)
                )
            # redis-py can swallow a cancellation inside a command: honour it here
            eventloop.raise_if_cancelled()
            await asyncio.sleep(self._pause_s())

    def _pause_s(self) -> float:
        pause = self.poll_interval_s
        if self._earliest_due_ms is not None:
            pause = min(pause, (self._earliest_due_ms - self._now_ms()) / 1000)
        return max(pause, _MIN_PAUSE_S)

    # -- one pass -------------------------------------------------------------------------

    async def tick(self) -> list[Fired]:
        """Publish every occurrence due now (by the misfire rule); returns what this
        scheduler published (not what a sibling won)."""
        now = self._now_ms()
        index = await self.store.index()
        states = await self.store.states(index)
        fired: list[Fired] = []
        earliest: int | None = None
        for name in sorted(index):
            state = states[name]
            if state is None or state.status != "active" or state.next_ms is None:
                continue
            next_ms: int | None = state.next_ms
            if state.next_ms <= now:
                try:
                    published = await self._fire(name, index[name], state, now)
                except Exception as error:  # one broken schedule must not stall the others
                    log.error(
                        "schedule could not fire; retrying next pass",
                        schedule=name,
                        error_type=type(error).__name__,
                        error=str(error),
                    )
                    continue
                if published is None:
                    continue  # a sibling published it, or the schedule changed: next pass
                fired.append(published)
                next_ms = published.next_ms
                states[name] = replace(
                    state,
                    next_ms=next_ms,
                    last_ms=published.occurrence_ms,
                    last_entry_id=published.entry_id,
                    fired=state.fired + 1,
                    missed=state.missed + published.missed,
                )
            if next_ms is not None:
                earliest = next_ms if earliest is None else min(earliest, next_ms)
        self._earliest_due_ms = earliest
        self._export(index, states)
        return fired

    async def _fire(self, name: str, stream: str, state: StoredState, now: int) -> Fired | None:
        definition = state.definition
        if definition is None:
            if name not in self._undecodable:
                self._undecodable.add(name)
                log.error("schedule definition cannot be read; not firing it", schedule=name)
            return None
        assert state.next_ms is not None
        plan = plan_fire(
            definition.timing,
            due_ms=state.next_ms,
            fired=state.fired,
            limit=definition.limit,
            now_ms=now,
        )
        if plan is None:
            return None
        event = definition.event(plan.occurrence_ms)
        entry_id = await FIRE(
            self.redis,
            keys=[keys.schedule_key(stream, name), keys.stream_key(stream)],
            args=[
                state.version,
                plan.occurrence_ms,
                "" if plan.next_ms is None else plan.next_ms,
                plan.missed,
                ENTRY_FIELD,
                event.to_json(),
            ],
        )
        if entry_id is None:
            self.races_lost += 1
            return None
        entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        metrics.PUBLISHED.labels(stream, definition.type).inc()
        metrics.SCHEDULE_OCCURRENCES_FIRED.labels(name).inc()
        if plan.missed:
            metrics.SCHEDULE_MISFIRES_SKIPPED.labels(name).inc(plan.missed)
            log.warning(
                "schedule missed occurrences: published the most recent one only",
                schedule=name,
                missed=plan.missed,
                first_missed=iso(state.next_ms),
                occurrence=iso(plan.occurrence_ms),
            )
        log.info(
            "schedule fired",
            schedule=name,
            occurrence=iso(plan.occurrence_ms),
            event_id=event.id,
            stream=stream,
            entry_id=entry,
            next=iso(plan.next_ms) if plan.next_ms is not None else None,
        )
        return Fired(name, stream, plan.occurrence_ms, event.id, entry, plan.missed, plan.next_ms)

    def _export(self, index: Mapping[str, str], states: Mapping[str, StoredState | None]) -> None:
        """Gauges: how many schedules, and each one's last and next fire time. Only what
        changed since the last pass is written (a pass over 1,000 schedules spent half its
        time rewriting unchanged gauges)."""
        metrics.SCHEDULES.set(len(index))
        exported: dict[str, tuple[int | None, int | None]] = {}
        for name in index:
            state = states.get(name)
            last = state.last_ms if state is not None else None
            upcoming = state.next_ms if state is not None and state.status == "active" else None
            exported[name] = (last, upcoming)
            before = self._exported.get(name, (None, None))
            for gauge, value, previous in (
                (metrics.SCHEDULE_LAST_FIRE, last, before[0]),
                (metrics.SCHEDULE_NEXT_FIRE, upcoming, before[1]),
            ):
                if value == previous and name in self._exported:
                    continue
                if value is not None:
                    gauge.labels(name).set(value / 1000)
                else:
                    with contextlib.suppress(KeyError):
                        gauge.remove(name)
        for name in self._exported.keys() - exported.keys():
            _forget(name)
        self._exported = exported


def _forget(name: str) -> None:
    for gauge in (metrics.SCHEDULE_LAST_FIRE, metrics.SCHEDULE_NEXT_FIRE):
        with contextlib.suppress(KeyError):
            gauge.remove(name)
