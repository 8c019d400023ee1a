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
from typing import Any

import structlog
from pydantic import ValidationError

from riverbed import metrics, tracing
from riverbed.consumer.base import ConsumerBase
from riverbed.consumer.types import Decoded, Message, Outcome
from riverbed.errors import PermanentError, RetryLater
from riverbed.logging import bind_message_context
from riverbed_contracts import CloudEvent
from riverbed_contracts.registry import UnknownEventType, get_spec

# the package's name, not this module's: log lines keep the logger they always had
log = structlog.get_logger(__package__)


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (version-traceid-parentid-flags), for log lines
    that a tracing backend can link to the trace."""
    if traceparent is None:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) >= 4 and len(parts[1]) == 32 else None


class HandlesEntries(ConsumerBase):
    """Runs the subscription's handler on one entry and records what it came to."""

    def _start_handlers(self, entries: list[Decoded]) -> None:
        """Handle ``entries`` one after another in one task, as long as each handler returns
        without waiting: a task per entry cost more than a no-op handler (about 1.5 µs).

        Once the task first waits (a handler doing I/O), the entries behind it move to a
        task of their own (:meth:`_hand_on_if_waiting`), so no handler waits on another's
        I/O and handlers still run concurrently up to the concurrency bound."""
        queue = deque(entries)
        task = asyncio.create_task(self._handle_in_turn(queue))
        for entry in entries:
            self._in_flight[entry[0]] = task
        # runs after the task's first step: a task's step is scheduled first (FIFO)
        asyncio.get_running_loop().call_soon(self._hand_on_if_waiting, queue, task)

    def _hand_on_if_waiting(self, queue: deque[Decoded], task: asyncio.Task[None]) -> None:
        """The task ran until its first wait: what it has not started goes to a new task."""
        if queue and not task.done():
            waiting = list(queue)
            queue.clear()
            self._start_handlers(waiting)

    async def _handle_in_turn(self, queue: deque[Decoded]) -> None:
        try:
            while queue:
                entry = queue.popleft()
                try:
                    await self._handle(*entry)
                except Exception:  # a bug here must not strand the entries behind this one
                    log.exception("handling an entry failed unexpectedly", entry_id=entry[0])
                    self._release_unstarted(entry)
        finally:
            # cut off at shutdown before they started: they stay pending and are redelivered
            for entry in queue:
                self._release_unstarted(entry)
            queue.clear()

    def _release_unstarted(self, entry: Decoded) -> None:
        """Let go of an entry without an outcome: it stays pending and is delivered again."""
        parsed = entry[4]
        self._release(entry[0], parsed.id if isinstance(parsed, CloudEvent) else None)

    async def _handle(
        self,
        entry_id: str,
        fields: dict[bytes, bytes],
        attempt: int,
        first_seen_ms: int,
        parsed: CloudEvent | Exception,
    ) -> None:
        if not isinstance(parsed, CloudEvent):
            self._conclude_undecodable(entry_id, fields, attempt, first_seen_ms, parsed)
            return
        event = parsed
        outcome = Outcome(
            entry_id,
            event.type,
            event.id,
            "ack",
            raw=fields,
            attempt=attempt,
            first_seen_ms=first_seen_ms,
        )
        with bind_message_context(
            event_id=event.id,
            event_type=event.type,
            stream=self.stream,
            entry_id=entry_id,
            attempt=attempt,
            correlation_id=event.correlationid,
            trace_id=trace_id(event.traceparent),
        ):
            if attempt > self.settings.max_deliveries:
                # it was delivered that often without an outcome: it keeps killing its consumer
                self._fail(
                    outcome,
                    RuntimeError(f"delivered {attempt - 1} times without completing"),
                    permanent=True,
                    reason="max_deliveries",
                )
            else:
                try:
                    with tracing.consumer_span(
                        event, self.stream, self.group, entry_id, attempt
                    ) as span:
                        await self._run_handler(outcome, event)
                        tracing.record_outcome(span, outcome.kind, outcome.reason, outcome.error)
                except asyncio.CancelledError:
                    # cut off at shutdown: stays pending, redelivered
                    self._release(entry_id, event.id)
                    raise
        self._record(outcome)
        self._release(entry_id, event.id)

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

    def _message_for(self, outcome: Outcome, event: CloudEvent) -> Message[Any] | None:
        """The handler's message, or None after failing the outcome for good: an unknown
        type, data its contract refuses, or an internal type from outside its producers."""
        try:
            spec = get_spec(event.type)
            payload = spec.model.model_validate(event.data)
        except (UnknownEventType, ValidationError) as error:
            if isinstance(error, UnknownEventType):
                outcome.event_type = "unknown"
            self._fail(outcome, error, permanent=True, reason="invalid")
            return None
        if not spec.trusts_source(event.source):
            # an internal type from outside its producers: someone wrote the stream directly
            self._fail(
                outcome,
                PermanentError(
                    f"{event.type} may come only from {list(spec.producers)} "
                    f"(source urn:riverbed:<service>), not from source {event.source!r}"
                ),
                permanent=True,
                reason="untrusted-source",
            )
            return None
        return Message(
            event,
            payload,
            outcome.entry_id,
            self.stream,
            outcome.attempt,
            first_seen_ms=outcome.first_seen_ms,
        )

    async def _run_handler(self, outcome: Outcome, event: CloudEvent) -> None:
        message = self._message_for(outcome, event)
        if message is None:
            return
        metric_type = outcome.event_type
        counters = self._counters(metric_type)
        counters.consumed.inc()
        started = time.perf_counter()
        entry_id = outcome.entry_id
        # a dict entry, not a timer per handler: the timeout loop cancels what overstays
        self._handler_started[entry_id] = time.monotonic()
        try:
            try:
                emitted = await self.subscription.handler(message)
            finally:
                self._handler_started.pop(entry_id, None)
            if emitted:
                await self.publisher.publish_many(emitted)
        except asyncio.CancelledError:
            if entry_id not in self._timed_out:
                raise  # shutdown: the entry stays pending and is redelivered
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            metrics.HANDLER_TIMEOUTS.labels(self.stream, self.group, metric_type).inc()
            self._fail(
                outcome,
                TimeoutError(f"handler ran past its timeout of {self.handler_timeout_s} s"),
                permanent=False,
                reason="timeout",
            )
        except PermanentError as error:
            self._fail(outcome, error, permanent=True, reason="permanent")
        except RetryLater as error:
            outcome.counted = error.counts_as_delivery
            self._fail(
                outcome,
                error,
                permanent=False,
                reason="retry_later" if outcome.counted else "deferred",
                delay_ms=error.delay_ms,
            )
        except Exception as error:
            self._fail(outcome, error, permanent=False, reason="error")
        finally:
            self._timed_out.discard(entry_id)
            counters.handler_seconds.observe(time.perf_counter() - started)

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
