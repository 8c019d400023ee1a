"""Handling one entry: validate its event, run the handler, and decide the outcome.

A handler's exception decides what happens next: :class:`~riverbed.errors.PermanentError`
dead-letters at once, :class:`~riverbed.errors.RetryLater` retries after its own delay (or
defers without counting a delivery), anything else retries with backoff until
``max_deliveries``; a handler that overstays its timeout is a failed delivery too.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog
from pydantic import ValidationError

from riverbed import metrics, tracing
from riverbed.consumer.base import ConsumerBase
from riverbed.consumer.decoding import event_id_of, event_when_handled
from riverbed.consumer.types import Decoded, Message, Outcome
from riverbed.errors import PermanentError, RetryLater
from riverbed.log_context import bind_message_context, enter_event_context, leave_message_context
from riverbed_contracts import CloudEvent
from riverbed_contracts.registry import UnknownEventType, get_spec

# the package's name, not this module's: log lines keep the logger they always had
log = structlog.get_logger(__package__)


class Tally:
    """What one run of handlers (one task) counted, applied to the per-type metrics at once
    when the run waits or ends: a Prometheus child's ``inc()`` or ``observe()`` takes a lock
    (~0.3 and ~1 µs), more than some handlers take."""

    __slots__ = ("consumed", "seconds")

    def __init__(self) -> None:
        self.consumed: dict[str, int] = {}  # event type -> handlers started
        self.seconds: dict[str, list[float]] = {}  # event type -> handler run times, s

    def started(self, event_type: str) -> list[float]:
        """Count a handler of ``event_type`` started; the list its run time goes in."""
        self.consumed[event_type] = self.consumed.get(event_type, 0) + 1
        run_times = self.seconds.get(event_type)
        if run_times is None:
            run_times = self.seconds[event_type] = []
        return run_times

    def apply(self, counters: Callable[[str], metrics.MessageMetrics]) -> None:
        for event_type, count in self.consumed.items():
            counters(event_type).consumed.inc(count)
        for event_type, run_times in self.seconds.items():
            metrics.observe_all(counters(event_type).handler_seconds, run_times)
        self.consumed.clear()
        self.seconds.clear()


class HandlesEntries(ConsumerBase):
    """Runs the subscription's handler on one entry and records what it came to."""

    def _start_handlers(self, entries: list[Decoded]) -> None:
        """Handle ``entries`` one after another in one task, as long as each handler returns
        without waiting: a task per entry cost more than a no-op handler (about 1.5 µs).

        Once the task first waits (a handler doing I/O), the entries behind it move to a
        task of their own (:meth:`_hand_on_if_waiting`), so no handler waits on another's
        I/O and handlers still run concurrently up to the concurrency bound."""
        queue = deque(entries)
        tally = Tally()
        task = asyncio.create_task(self._handle_in_turn(queue, tally))
        for entry in entries:
            self._in_flight[entry[0]] = task
        # runs after the task's first step: a task's step is scheduled first (FIFO)
        asyncio.get_running_loop().call_soon(self._hand_on_if_waiting, queue, task, tally)

    def _hand_on_if_waiting(
        self, queue: deque[Decoded], task: asyncio.Task[None], tally: Tally
    ) -> None:
        """The task ran until its first wait: what it has not started goes to a new task,
        and what it counted so far goes to the metrics now rather than when it ends."""
        if task.done():
            return
        tally.apply(self._counters)
        if queue:
            waiting = list(queue)
            queue.clear()
            self._start_handlers(waiting)

    async def _handle_in_turn(self, queue: deque[Decoded], tally: Tally) -> None:
        try:
            while queue:
                entry = queue.popleft()
                try:
                    prepared = self._prepared(entry)
                    if prepared is None:
                        continue  # concluded without its handler
                    entry, event = prepared
                    # one frame fewer than a coroutine per entry: this loop runs the handler
                    context = enter_event_context(event, self.stream, entry[0], entry[2])
                    try:
                        if tracing.tracing_enabled():
                            await self._run_traced(entry, event, tally)
                        else:
                            await self._run_handler(entry, event, tally)
                    finally:
                        leave_message_context(context)
                    self._release(entry[0], event.id)
                except asyncio.CancelledError:
                    # cut off at shutdown: stays pending, redelivered
                    self._release_unstarted(entry)
                    raise
                except Exception:  # a bug here must not strand the entries behind this one
                    log.exception("handling an entry failed unexpectedly", entry_id=entry[0])
                    self._release_unstarted(entry)
        finally:
            tally.apply(self._counters)
            # cut off at shutdown before they started: they stay pending and are redelivered
            for entry in queue:
                self._release_unstarted(entry)
            queue.clear()

    def _release_unstarted(self, entry: Decoded) -> None:
        """Let go of an entry without an outcome: it stays pending and is delivered again."""
        self._release(entry[0], event_id_of(entry[4]))

    def _prepared(self, entry: Decoded) -> tuple[Decoded, CloudEvent] | None:
        """The entry with its event parsed, ready for its handler; None once concluded
        without one (not an event, or delivered too often)."""
        entry_id, fields, attempt, first_seen_ms, parsed = entry
        # only its id was read so far: parse it now, while the next batch is on its way
        held_id = parsed if isinstance(parsed, str) else None
        event = event_when_handled(fields, parsed) if isinstance(parsed, str) else parsed
        if not isinstance(event, CloudEvent):
            self._conclude_undecodable(entry_id, fields, attempt, first_seen_ms, event)
            if held_id is not None:
                self._release(entry_id, held_id)
            return None
        if held_id is not None:
            entry = (entry_id, fields, attempt, first_seen_ms, event)
        if attempt > self.settings.max_deliveries:
            # it was delivered that often without an outcome: it keeps killing its consumer
            outcome = self._outcome_of(entry)
            context = enter_event_context(event, self.stream, entry_id, attempt)
            try:
                self._fail(
                    outcome,
                    RuntimeError(f"delivered {attempt - 1} times without completing"),
                    permanent=True,
                    reason="max_deliveries",
                )
            finally:
                leave_message_context(context)
            self._record(outcome)
            self._release(entry_id, event.id)
            return None
        return entry, event

    async def _run_traced(self, entry: Decoded, event: CloudEvent, tally: Tally) -> None:
        entry_id, _fields, attempt, _first_seen_ms, _event = entry
        with tracing.consumer_span(event, self.stream, self.group, entry_id, attempt) as span:
            failed = await self._run_handler(entry, event, tally)
            if failed is None:
                tracing.record_outcome(span, "ack", "", None)
            else:
                tracing.record_outcome(span, failed.kind, failed.reason, failed.error)

    def _outcome_of(self, entry: Decoded) -> Outcome:
        """The outcome of handling a decoded ``entry``, to be failed (successes skip it)."""
        entry_id, fields, attempt, first_seen_ms, event = entry
        assert isinstance(event, CloudEvent)
        return Outcome(
            entry_id,
            event.type,
            event.id,
            "ack",
            raw=fields,
            attempt=attempt,
            first_seen_ms=first_seen_ms,
        )

    def _conclude_undecodable(
        self,
        entry_id: str,
        fields: dict[bytes, bytes],
        attempt: int,
        first_seen_ms: int,
        error: Exception,
    ) -> None:
        """An entry that is not a Riverbed event: dead-lettered at once (permanent)."""
        outcome = Outcome(
            entry_id,
            "unknown",
            None,
            "ack",
            raw=fields,
            attempt=attempt,
            first_seen_ms=first_seen_ms,
        )
        with bind_message_context(
            event_id=None,
            event_type="unknown",
            stream=self.stream,
            entry_id=entry_id,
            attempt=attempt,
        ):
            self._fail(outcome, error, permanent=True, reason="undecodable")
        self._record(outcome)
        self._release(entry_id)

    def _message_for(self, entry: Decoded, event: CloudEvent) -> Message[Any] | Outcome:
        """The handler's message, or the failed outcome, recorded: an unknown type, data its
        contract refuses, or an internal type from outside its producers."""
        entry_id, _fields, attempt, first_seen_ms, _event = entry
        try:
            spec = get_spec(event.type)
            payload = spec.model.model_validate(event.data)
        except (UnknownEventType, ValidationError) as error:
            outcome = self._outcome_of(entry)
            if isinstance(error, UnknownEventType):
                outcome.event_type = "unknown"
            self._fail(outcome, error, permanent=True, reason="invalid")
            self._record(outcome)
            return outcome
        if not spec.trusts_source(event.source):
            # an internal type from outside its producers: someone wrote the stream directly
            outcome = self._outcome_of(entry)
            self._fail(
                outcome,
                PermanentError(
                    f"{event.type} may come only from {list(spec.producers)} "
                    f"(source urn:riverbed:<service>), not from source {event.source!r}"
                ),
                permanent=True,
                reason="untrusted-source",
            )
            self._record(outcome)
            return outcome
        return Message.of(event, payload, entry_id, self.stream, attempt, first_seen_ms)

    async def _run_handler(self, entry: Decoded, event: CloudEvent, tally: Tally) -> Outcome | None:
        """Run the handler on ``entry`` and record what it came to; the outcome when it
        failed, None when it is acknowledged."""
        message = self._message_for(entry, event)
        if isinstance(message, Outcome):
            return message
        entry_id = entry[0]
        if self._handlers_running < self.settings.concurrency and not self._slot_waiters:
            self._handlers_running += 1  # a slot is free: taken without a call (the usual)
        else:
            await self._wait_for_handler_slot()
        run_times = tally.started(event.type)
        # a dict entry, not a timer per handler: the timeout loop cancels what overstays
        started = self._handler_started[entry_id] = time.perf_counter()
        try:
            try:
                emitted = await self.subscription.handler(message)
            finally:
                self._handler_started.pop(entry_id, None)
                self._give_back_handler_slot()
            if emitted:
                await self.publisher.publish_many(emitted)
        except asyncio.CancelledError:
            if entry_id not in self._timed_out:
                raise  # shutdown: the entry stays pending and is redelivered
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            metrics.HANDLER_TIMEOUTS.labels(self.stream, self.group, event.type).inc()
            return self._failed(
                entry,
                TimeoutError(f"handler ran past its timeout of {self.handler_timeout_s} s"),
                reason="timeout",
            )
        except Exception as error:
            return self._failed(entry, error)
        else:
            self._record_ack(entry_id, event.type, event.id)
            return None
        finally:
            if self._timed_out:
                self._timed_out.discard(entry_id)
            run_times.append(time.perf_counter() - started)

    def _failed(self, entry: Decoded, error: Exception, reason: str = "error") -> Outcome:
        """Record what a handler's ``error`` comes to (see the module's docstring)."""
        outcome = self._outcome_of(entry)
        if isinstance(error, PermanentError):
            self._fail(outcome, error, permanent=True, reason="permanent")
        elif isinstance(error, RetryLater):
            outcome.counted = error.counts_as_delivery
            self._fail(
                outcome,
                error,
                permanent=False,
                reason="retry_later" if outcome.counted else "deferred",
                delay_ms=error.delay_ms,
            )
        else:
            self._fail(outcome, error, permanent=False, reason=reason)
        self._record(outcome)
        return outcome

    def _fail(
        self,
        outcome: Outcome,
        error: BaseException,
        *,
        permanent: bool,
        reason: str,
        delay_ms: int | None = None,
    ) -> None:
        outcome.error = error
        outcome.reason = reason
        if outcome.counted:  # a deferral is not a failure: the handler did not try
            metrics.FAILED.labels(self.stream, self.group, outcome.event_type).inc()
        exhausted = outcome.counted and outcome.attempt >= self.settings.max_deliveries
        if permanent or exhausted:
            outcome.kind = "dead"
            if not permanent:
                outcome.reason = "exhausted"
            log.warning(
                "dead-lettering entry",
                reason=outcome.reason,
                error_type=type(error).__name__,
                error=str(error),
            )
        else:
            outcome.kind = "retry"
            outcome.delay_ms = (
                delay_ms if delay_ms is not None else self.backoff.delay_ms(outcome.attempt)
            )
            log.info(
                "handler failed; retry scheduled"
                if outcome.counted
                else "handler deferred; redelivery scheduled, not counted as a delivery",
                delay_ms=outcome.delay_ms,
                error_type=type(error).__name__,
                error=str(error),
            )
