"""The reliable consumer: one consumer-group member on one stream.

The hot path reads batches (``XREADGROUP COUNT/BLOCK``) and gives every entry
its own outcome; handlers run concurrently up to a bound, and outcomes are
applied to Redis together (one script call acknowledges every success of a
flush). What each row of docs/delivery.md's table becomes here:

- a failed (or deferred) delivery is parked in the stream's delay store and
  acknowledged in one script; a promoter appends it again when due, as a new entry
  carrying its attempt number and meant for this group only (``riverbed.delay``), so a
  retry never blocks the stream and never pins it in the pending list;
- the attempt is the carried attempt plus the redeliveries of this entry; past
  ``max_deliveries`` (or at once for a permanent error) an entry is copied to the
  dead-letter stream and acknowledged in one script;
- a handler that runs past its timeout is cancelled: a failed delivery, reason ``timeout``;
- held entries are kept alive with ``XCLAIM … JUSTID`` so the visibility timeout
  measures liveness, not handler time; entries idle past it are reclaimed;
- every consumer beats a heartbeat each second; a sibling takes over the entries of a
  consumer whose heartbeat stopped within seconds, not a whole visibility timeout;
- on start the consumer re-reads its own pending entries first;
- entries trimmed while pending are dropped from the pending list and counted;
- ``NOGROUP`` (Redis restarted or flushed) recreates the group, with backoff;
- idle consumers with nothing pending are removed from the group;
- ``stop()`` stops reading, lets in-flight handlers finish within a timeout, and
  applies their outcomes before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog
from pydantic import BaseModel, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from riverbed import eventloop, keys, metrics, scripts
from riverbed.backoff import Backoff
from riverbed.connection import Redis
from riverbed.delay import ATTEMPT_FIELD, FIRST_SEEN_FIELD, GROUP_FIELD, DelayStore, Parked
from riverbed.errors import PermanentError, RetryLater
from riverbed.logging import bind_message_context
from riverbed.publisher import Publisher
from riverbed.settings import ConsumerSettings
from riverbed_contracts import CloudEvent, EntryDecodeError, event_from_entry
from riverbed_contracts.registry import UnknownEventType, get_spec

log = structlog.get_logger(__name__)

PayloadT = TypeVar("PayloadT", bound=BaseModel)

#: how long a second entry of an event being handled here waits before it is looked at
#: again (ms): by then the first has usually concluded, and its record skips the copy
DUPLICATE_IN_HAND_WAIT_MS = 1_000

#: errors that mean "Redis is unreachable right now": wait and try again
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(frozen=True)
class Message(Generic[PayloadT]):
    """One delivered event, as a handler sees it."""

    event: CloudEvent
    payload: PayloadT
    entry_id: str
    stream: str
    attempt: int  # this delivery's number for this group: 1 on the first delivery
    #: when this group first received the event (ms since the epoch), carried across retries
    #: and deferrals: how long an event has been waiting, whatever its attempt count says
    first_seen_ms: int = 0


#: a handler gets a message and returns the events it wants published (or None);
#: they are published before the entry is acknowledged.
Handler = Callable[[Message[Any]], Awaitable[Sequence[CloudEvent] | None]]


@dataclass(frozen=True)
class Subscription:
    """What a service consumes: one stream, one group, one handler."""

    stream: str
    group: str
    handler: Handler
    idempotent: bool = True  # skip events whose id this group already handled
    backoff: Backoff | None = None  # None: exponential, from ConsumerSettings
    start_id: str = "0"  # where a newly created group starts: "0" = everything retained
    handler_timeout_s: float | None = None  # None: ConsumerSettings.handler_timeout_s


@dataclass
class _Outcome:
    entry_id: str
    event_type: str
    event_id: str | None
    kind: str  # "ack" | "retry" | "dead"
    delay_ms: int = 0
    error: BaseException | None = None
    raw: dict[bytes, bytes] = field(default_factory=dict)
    attempt: int = 1
    reason: str = ""
    counted: bool = True  # False: a deferral, the next delivery keeps this attempt
    first_seen_ms: int = 0


def default_consumer_name() -> str:
    """``HOSTNAME`` from the environment where the platform sets it (a Kubernetes pod's or a
    container's name: stable across restarts of a StatefulSet pod, so a restarted pod
    re-reads its own pending entries first), else host and pid (unique per process)."""
    return os.environ.get("HOSTNAME") or f"{socket.gethostname()}-{os.getpid()}"


async def unused_consumer_name(
    redis: Redis, subscriptions: Sequence[Subscription], name: str, settings: ConsumerSettings
) -> str:
    """``name``, or ``name-<pid>`` when a live process already consumes under ``name`` (its
    heartbeat is fresh): two processes sharing one name would take each other's entries."""
    now_ms = await _redis_time_ms(redis)
    for subscription in subscriptions:
        beat = await redis.hget(keys.heartbeats_key(subscription.stream, subscription.group), name)
        if beat is not None and now_ms - int(beat) < settings.heartbeat_timeout_ms:
            fallback = f"{name}-{os.getpid()}"
            log.warning(
                "consumer name in use by a live process; using another",
                consumer=name,
                instead=fallback,
                stream=subscription.stream,
            )
            return fallback
    return name


async def _redis_time_ms(redis: Redis) -> int:
    seconds, microseconds = await redis.time()
    return int(seconds) * 1000 + int(microseconds) // 1000


def _trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (version-traceid-parentid-flags), for log lines
    that a tracing backend can link to the trace."""
    if traceparent is None:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) >= 4 and len(parts[1]) == 32 else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


#: the outcome type of another group's retry: acknowledged, never counted as handled
_NOT_OURS = "another-group"
_GROUP_FIELD = GROUP_FIELD.encode()
_ATTEMPT_FIELD = ATTEMPT_FIELD.encode()
_FIRST_SEEN_FIELD = FIRST_SEEN_FIELD.encode()


def _carried(fields: dict[bytes, bytes], entry_id: str) -> tuple[bytes | None, int, int]:
    """(target group or None, attempt carried, first seen ms) of an entry: a promoted retry
    carries all three; a first publication none (attempt 1, first seen = the entry's time)."""
    target = fields.get(_GROUP_FIELD)
    attempt = fields.get(_ATTEMPT_FIELD)
    first_seen = fields.get(_FIRST_SEEN_FIELD)
    try:
        return (
            target,
            int(attempt) if attempt is not None else 1,
            int(first_seen) if first_seen is not None else int(entry_id.split("-", 1)[0]),
        )
    except ValueError:  # a hand-written entry with a bad number: count from here
        return target, 1, int(entry_id.split("-", 1)[0])


class StreamConsumer:
    """Runs one :class:`Subscription` until :meth:`stop` is called."""

    def __init__(
        self,
        redis: Redis,
        subscription: Subscription,
        *,
        settings: ConsumerSettings,
        consumer_name: str,
        service: str,
        publisher: Publisher | None = None,
    ) -> None:
        self.redis = redis
        self.subscription = subscription
        self.settings = settings
        self.name = consumer_name
        self.service = service
        self.publisher = publisher or Publisher(redis)
        self.stream = subscription.stream
        self.group = subscription.group
        self.stream_key = keys.stream_key(self.stream)
        self.dead_letter_key = keys.dead_letter_key(self.stream)
        self.legacy_schedule_key = keys.legacy_retry_schedule_key(self.stream, self.group)
        self.delay = DelayStore(redis, self.stream)
        self.handler_timeout_s = subscription.handler_timeout_s or settings.handler_timeout_s
        self._group_bytes = self.group.encode()
        self.done_key = keys.idempotency_key(self.stream, self.group)
        self.heartbeats_key = keys.heartbeats_key(self.stream, self.group)
        self.backoff = subscription.backoff or Backoff(
            base_ms=settings.retry_base_ms,
            max_ms=settings.retry_max_ms,
            jitter=settings.retry_jitter,
        )
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._handler_started: dict[str, float] = {}  # entry id -> monotonic s
        self._timed_out: set[str] = set()  # entries whose handler was cancelled for its timeout
        self._events_in_hand: dict[str, str] = {}  # event id -> the entry handling it here
        self._cut_off = False  # handlers were cut off at shutdown: their entries stay pending
        self._in_touch_since: float | None = None  # monotonic s of the first beat since a break
        self._outcomes: list[_Outcome] = []
        self._outcome_ready = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()  # no new reads or claims
        self._closing = asyncio.Event()  # in-flight work is over: background loops end
        self._promote_soon = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._main: asyncio.Task[None] | None = None
        labels = (self.stream, self.group)
        metrics.IN_FLIGHT.labels(*labels).set_function(lambda: len(self._in_flight))
        metrics.HANDLERS_SLOW.labels(*labels).set_function(self._slow_handlers)
        self._by_type: dict[str, metrics.MessageMetrics] = {}

    # -- lifecycle ---------------------------------------------------------

    async def run(self) -> None:
        """Consume until stopped; returns after the drain."""
        log.info("consumer starting", stream=self.stream, group=self.group, consumer=self.name)
        try:
            # Redis away at start-up: wait for it (a consumer that gave up here would leave
            # its service unready for good)
            while not self._stopping.is_set() and not await self._guarded(
                "create-group", self._ensure_group
            ):
                pass
            await self._guarded("carry-over", self._carry_over_legacy)
            await self._guarded("heartbeat", self._beat_and_note)
            self._tasks = [
                asyncio.create_task(self._heartbeat_loop(), name=f"heartbeat:{self.stream}"),
                asyncio.create_task(self._flush_loop(), name=f"flush:{self.stream}"),
                asyncio.create_task(self._keepalive_loop(), name=f"keepalive:{self.stream}"),
                asyncio.create_task(self._reclaim_loop(), name=f"reclaim:{self.stream}"),
                asyncio.create_task(self._promote_loop(), name=f"promote:{self.stream}"),
                asyncio.create_task(self._timeout_loop(), name=f"timeouts:{self.stream}"),
            ]
            await self._recover_own_pending()
            await self._read_loop()
        finally:
            await self._drain()
            log.info("consumer stopped", stream=self.stream, group=self.group, consumer=self.name)

    def start(self) -> asyncio.Task[None]:
        self._main = asyncio.create_task(self.run(), name=f"consumer:{self.stream}:{self.group}")
        return self._main

    async def join(self) -> None:
        """Wait until ``run()`` has returned (after :meth:`stop`, once drained)."""
        if self._main is not None:
            await asyncio.gather(self._main, return_exceptions=True)

    def stop(self) -> None:
        """Stop reading; ``run()`` then drains in-flight work and returns."""
        self._stopping.set()
        self._slot_free.set()
        self._promote_soon.set()

    @property
    def healthy(self) -> bool:
        return self._main is not None and not self._main.done() and not self._stopping.is_set()

    async def _drain(self) -> None:
        pending = list(self._in_flight.values())
        if pending:
            log.info("draining in-flight handlers", count=len(pending), stream=self.stream)
            _, unfinished = await asyncio.wait(pending, timeout=self.settings.shutdown_timeout_s)
            for task in unfinished:
                task.cancel()
            if unfinished:
                # their entries stay pending and are redelivered: nothing is lost; the
                # heartbeat is left to go stale, so a sibling takes them over in seconds
                log.warning("handlers cut off at shutdown", count=len(unfinished))
                await asyncio.gather(*unfinished, return_exceptions=True)
                self._cut_off = True
        # background loops end on their own once closing is set (the flush loop after
        # applying every outcome); cancelling is only the fallback for a stuck Redis call
        self._closing.set()
        self._outcome_ready.set()
        self._promote_soon.set()
        if not self._tasks:  # stopped before its loops started
            return
        _, stuck = await asyncio.wait(self._tasks, timeout=self.settings.shutdown_timeout_s)
        for task in stuck:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    # -- group management --------------------------------------------------

    async def _ensure_group(self) -> bool:
        """Create the group unless it exists; True once it does."""
        try:
            await self.redis.xgroup_create(
                self.stream_key, self.group, id=self.subscription.start_id, mkstream=True
            )
            log.info("consumer group created", stream=self.stream, group=self.group)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        return True

    async def _recreate_group(self, error: ResponseError) -> None:
        metrics.GROUP_RECREATED.labels(self.stream, self.group).inc()
        log.warning(
            "consumer group missing (Redis restarted or flushed?); recreating",
            stream=self.stream,
            group=self.group,
            error=str(error),
        )
        await self._ensure_group()

    async def _guarded(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run a Redis call; on NOGROUP recreate the group, on Redis down wait. None on failure."""
        try:
            return await call()
        except ResponseError as error:
            # NOGROUP: the group is gone; UNBLOCKED: the stream vanished under a blocked read
            if "NOGROUP" in str(error) or "UNBLOCKED" in str(error):
                with contextlib.suppress(*REDIS_DOWN, ResponseError):
                    await self._recreate_group(error)
            else:
                log.error(f"{what} failed", error=str(error), stream=self.stream)
                metrics.REDIS_ERRORS.labels(self.stream, self.group, what).inc()
            await self._pause(0.5)
        except REDIS_DOWN as error:
            log.warning(f"{what}: Redis unavailable", error=str(error), stream=self.stream)
            metrics.REDIS_ERRORS.labels(self.stream, self.group, what).inc()
            await self._pause(1.0)
        return None

    # -- reading -----------------------------------------------------------

    async def _read_loop(self) -> None:
        streams: dict[Any, Any] = {self.stream_key: ">"}
        while not self._stopping.is_set():
            free = self.settings.concurrency - len(self._in_flight)
            # reading for a few free slots makes many small round trips: wait for half a batch
            if free < min(self.settings.batch_size, self.settings.concurrency) // 2 or free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            count = min(self.settings.batch_size, free)
            read = asyncio.ensure_future(
                self._guarded(
                    "read",
                    lambda count=count: self.redis.xreadgroup(  # type: ignore[misc]
                        self.group, self.name, streams, count=count, block=self.settings.block_ms
                    ),
                )
            )
            stop = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not read.done():
                # entries Redis handed us in this cancelled read stay in our pending
                # list and are re-read after a restart or reclaimed by a sibling
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await read
                return
            reply = read.result()
            if reply:
                await self._dispatch_batch(reply[0][1], deliveries=None)

    async def _recover_own_pending(self) -> None:
        """Page through our own pending list once, in id order, before reading new entries."""
        start = "-"
        while not self._stopping.is_set():
            seen = await self._claim_entries("own", min_idle_ms=0, start=start)
            if not seen:
                return
            start = "(" + max(seen, key=lambda i: tuple(int(p) for p in i.split("-")))
            if len(self._in_flight) >= self.settings.concurrency:
                self._slot_free.clear()
                await self._slot_free.wait()

    async def _claim_entries(self, mode: str, *, min_idle_ms: int, start: str = "-") -> list[str]:
        """Claim entries by ``mode`` (see scripts.CLAIM) and dispatch them; returns their ids."""
        count = max(
            min(self.settings.batch_size, self.settings.concurrency - len(self._in_flight)), 0
        )
        if count == 0:
            return []
        reply = await self._guarded(
            f"claim-{mode}",
            lambda: scripts.CLAIM(
                self.redis,
                keys=[self.stream_key, self.legacy_schedule_key, self.heartbeats_key],
                args=[
                    mode,
                    self.group,
                    self.name,
                    min_idle_ms,
                    count,
                    start,
                    self.settings.heartbeat_timeout_ms,
                ],
            ),
        )
        if not reply:
            return []
        claimed, flat_counts, deleted = reply
        if deleted:
            metrics.DELETED_WHILE_PENDING.labels(self.stream, self.group).inc(len(deleted))
            log.warning(
                "pending entries were trimmed before they were handled",
                stream=self.stream,
                count=len(deleted),
                entry_ids=[_text(i) for i in deleted[:10]],
            )
        seen = [_text(i) for i in deleted] + [_text(entry[0]) for entry in claimed]
        if not claimed:
            return seen
        deliveries = {
            _text(flat_counts[i]): int(flat_counts[i + 1]) for i in range(0, len(flat_counts), 2)
        }
        if mode == "stale":
            metrics.RECLAIMED.labels(self.stream, self.group).inc(len(claimed))
            log.info("reclaimed idle entries", stream=self.stream, count=len(claimed))
        elif mode == "dead":
            metrics.TAKEN_OVER.labels(self.stream, self.group).inc(len(claimed))
            log.info(
                "took over the entries of a consumer whose heartbeat stopped",
                stream=self.stream,
                count=len(claimed),
            )
        await self._dispatch_batch(claimed, deliveries=deliveries)
        return seen

    async def _dispatch_batch(
        self, entries: list[Any], *, deliveries: dict[str, int] | None
    ) -> None:
        """Start a handler task per entry; deliveries=None means first delivery."""
        decoded: list[tuple[str, dict[bytes, bytes], int, int, CloudEvent | Exception]] = []
        for raw_id, raw_fields in entries:
            entry_id = _text(raw_id)
            # XREADGROUP replies carry a dict; a script's XCLAIM reply a flat list
            fields = (
                raw_fields
                if isinstance(raw_fields, dict)
                else dict(zip(raw_fields[::2], raw_fields[1::2], strict=True))
            )
            target, carried, first_seen = _carried(fields, entry_id)
            if target is not None and target != self._group_bytes:
                # another group's retry: not ours to handle, only to acknowledge
                self._record(_Outcome(entry_id, _NOT_OURS, None, "ack", counted=False))
                continue
            redelivered = 0 if deliveries is None else deliveries.get(entry_id, 1) - 1
            attempt = carried + redelivered
            parsed: CloudEvent | Exception
            try:
                parsed = event_from_entry(fields)
            except EntryDecodeError as error:
                parsed = error
            decoded.append((entry_id, fields, attempt, first_seen, parsed))
        already_done: set[str] = set()
        if self.subscription.idempotent:
            already_done = await self._already_handled(
                [d[4].id for d in decoded if isinstance(d[4], CloudEvent)]
            )
        for entry_id, fields, attempt, first_seen, parsed in decoded:
            if entry_id in self._in_flight:
                continue  # claimed back while still running here: it is already in hand
            if isinstance(parsed, CloudEvent) and parsed.id in already_done:
                metrics.DUPLICATES_SKIPPED.labels(self.stream, self.group).inc()
                self._record(_Outcome(entry_id, parsed.type, parsed.id, "ack", attempt=attempt))
                continue
            if self.subscription.idempotent and isinstance(parsed, CloudEvent):
                if parsed.id in self._events_in_hand:
                    # a second entry of an event being handled here right now (a producer
                    # killed after appending re-appends it): wait for the first to conclude,
                    # then the idempotency record skips it; never both at once
                    self._record(
                        _Outcome(
                            entry_id,
                            parsed.type,
                            parsed.id,
                            "retry",
                            delay_ms=DUPLICATE_IN_HAND_WAIT_MS,
                            raw=fields,
                            attempt=attempt,
                            reason="duplicate-in-hand",
                            counted=False,
                            first_seen_ms=first_seen,
                        )
                    )
                    continue
                self._events_in_hand[parsed.id] = entry_id
            self._in_flight[entry_id] = asyncio.create_task(
                self._handle(entry_id, fields, attempt, first_seen, parsed)
            )

    async def _already_handled(self, event_ids: list[str]) -> set[str]:
        """Event ids this group handled within the idempotency window (one script call)."""
        if not event_ids:
            return set()
        oldest_ms = int(time.time() * 1000) - self.settings.idempotency_ttl_s * 1000
        try:
            flags = await scripts.HANDLED(
                self.redis, keys=[self.done_key], args=[oldest_ms, json.dumps(event_ids)]
            )
        except REDIS_DOWN:
            return set()  # handling again is safe: effects are idempotent downstream
        return {event_id for event_id, flag in zip(event_ids, flags, strict=True) if flag}

    def _release(self, entry_id: str, event_id: str | None = None) -> None:
        self._in_flight.pop(entry_id, None)
        if event_id is not None and self._events_in_hand.get(event_id) == entry_id:
            del self._events_in_hand[event_id]
        self._slot_free.set()

    # -- handling ----------------------------------------------------------

    def _counters(self, event_type: str) -> metrics.MessageMetrics:
        found = self._by_type.get(event_type)
        if found is None:
            found = metrics.MessageMetrics.of(self.stream, self.group, event_type)
            self._by_type[event_type] = found
            # exported from 0, so the first timeout is an increase an alert rule can see
            metrics.HANDLER_TIMEOUTS.labels(self.stream, self.group, event_type)
        return found

    async def _handle(
        self,
        entry_id: str,
        fields: dict[bytes, bytes],
        attempt: int,
        first_seen_ms: int,
        parsed: CloudEvent | Exception,
    ) -> None:
        event_type = parsed.type if isinstance(parsed, CloudEvent) else "unknown"
        event_id = parsed.id if isinstance(parsed, CloudEvent) else None
        outcome = _Outcome(
            entry_id,
            event_type,
            event_id,
            "ack",
            raw=fields,
            attempt=attempt,
            first_seen_ms=first_seen_ms,
        )
        with bind_message_context(
            event_id=event_id,
            event_type=event_type,
            stream=self.stream,
            entry_id=entry_id,
            attempt=attempt,
            correlation_id=parsed.correlationid if isinstance(parsed, CloudEvent) else None,
            trace_id=_trace_id(parsed.traceparent) if isinstance(parsed, CloudEvent) else None,
        ):
            if isinstance(parsed, Exception):
                self._fail(outcome, parsed, permanent=True, reason="undecodable")
            elif attempt > self.settings.max_deliveries:
                # it was delivered that often without an outcome: it keeps killing its consumer
                self._fail(
                    outcome,
                    RuntimeError(f"delivered {attempt - 1} times without completing"),
                    permanent=True,
                    reason="max_deliveries",
                )
            else:
                try:
                    await self._run_handler(outcome, parsed)
                except asyncio.CancelledError:
                    # cut off at shutdown: stays pending, redelivered
                    self._release(entry_id, event_id)
                    raise
        self._record(outcome)
        self._release(entry_id, event_id)

    async def _run_handler(self, outcome: _Outcome, event: CloudEvent) -> None:
        metric_type = outcome.event_type
        try:
            spec = get_spec(event.type)
            payload = spec.model.model_validate(event.data)
        except (UnknownEventType, ValidationError) as error:
            metric_type = "unknown" if isinstance(error, UnknownEventType) else metric_type
            outcome.event_type = metric_type
            self._fail(outcome, error, permanent=True, reason="invalid")
            return
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
            return
        self._counters(metric_type).consumed.inc()
        message: Message[Any] = Message(
            event,
            payload,
            outcome.entry_id,
            self.stream,
            outcome.attempt,
            first_seen_ms=outcome.first_seen_ms,
        )
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
            self._counters(metric_type).handler_seconds.observe(time.perf_counter() - started)

    async def _timeout_loop(self) -> None:
        """Cancel handlers running past their timeout, checking a few times per timeout (at
        least every second); :meth:`_run_handler` counts such a cancel as a failed delivery."""
        interval = min(1.0, self.handler_timeout_s / 4)
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=interval)
                return
            overdue = time.monotonic() - self.handler_timeout_s
            for entry_id, started in list(self._handler_started.items()):
                task = self._in_flight.get(entry_id)
                if started <= overdue and task is not None and entry_id not in self._timed_out:
                    self._timed_out.add(entry_id)
                    task.cancel()

    def _slow_handlers(self) -> int:
        """Handlers running longer than half their timeout (a gauge, read at scrape time)."""
        since = time.monotonic() - self.handler_timeout_s / 2
        return sum(1 for started in list(self._handler_started.values()) if started < since)

    def _fail(
        self,
        outcome: _Outcome,
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

    def _record(self, outcome: _Outcome) -> None:
        self._outcomes.append(outcome)
        self._outcome_ready.set()

    # -- applying outcomes ---------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._outcome_ready.wait()
            if self.settings.ack_flush_ms and not self._closing.is_set():
                await asyncio.sleep(self.settings.ack_flush_ms / 1000)  # let acks gather
            self._outcome_ready.clear()
            while self._outcomes:
                try:
                    await self._apply_outcomes()
                except REDIS_DOWN as error:
                    log.warning("could not apply outcomes; will retry", error=str(error))
                    await asyncio.sleep(1.0)  # s; outcomes are kept until applied
                eventloop.raise_if_cancelled()
            if self._closing.is_set():
                return

    async def _apply_outcomes(self) -> None:
        """Apply what handlers decided, one kind at a time; an outcome leaves the queue only
        once applied, so a Redis failure midway neither loses nor repeats any of them."""
        while self._outcomes:
            batch = self._outcomes[:1000]  # bounded script arguments
            acks = [o for o in batch if o.kind == "ack"]
            retries = [o for o in batch if o.kind == "retry"]
            dead = [o for o in batch if o.kind == "dead"]
            if acks:
                await self._acknowledge(acks)
                self._forget(acks)
            if retries:
                await self._park(retries)
                self._forget(retries)
            for o in dead:
                await scripts.DEAD_LETTER(
                    self.redis,
                    keys=[self.stream_key, self.dead_letter_key],
                    args=[self.group, o.entry_id, *self._dead_letter_fields(o)],
                )
                self._forget([o])
                metrics.DEAD_LETTERED.labels(self.stream, self.group, o.event_type, o.reason).inc()

    async def _park(self, retries: list[_Outcome]) -> None:
        """Move retries and deferrals to the delay store, acknowledging their entries."""
        now_ms = int(time.time() * 1000)
        parked = await self.delay.park(
            self.group,
            self.name,
            [
                Parked(
                    entry_id=o.entry_id,
                    event=o.raw.get(b"event", b""),
                    due_ms=now_ms + o.delay_ms,
                    # a deferral did not try: the next delivery keeps this attempt
                    next_attempt=o.attempt + 1 if o.counted else o.attempt,
                    first_seen_ms=o.first_seen_ms,
                    reason=o.reason,
                    error=f"{type(o.error).__name__}: {o.error}" if o.error else "",
                )
                for o in retries
            ],
        )
        for o in retries:
            if o.entry_id in parked:
                metrics.RETRIED.labels(self.stream, self.group, o.event_type).inc()
        if len(parked) < len(retries):
            log.warning(
                "entries claimed by a sibling before their retry was parked; it decides",
                count=len(retries) - len(parked),
                stream=self.stream,
            )
        self._promote_soon.set()  # the promoter looks again: a short retry may be due soon

    def _forget(self, applied: list[_Outcome]) -> None:
        done = {id(o) for o in applied}
        self._outcomes = [o for o in self._outcomes if id(o) not in done]

    async def _acknowledge(self, acks: list[_Outcome]) -> None:
        entry_ids = [o.entry_id for o in acks]
        if self.subscription.idempotent:
            event_ids = [o.event_id for o in acks if o.event_id is not None]
            await scripts.ACK_DONE(
                self.redis,
                keys=[self.stream_key, self.done_key],
                args=[
                    self.group,
                    int(time.time() * 1000),
                    self.settings.idempotency_ttl_s * 1000,
                    json.dumps(entry_ids),
                    json.dumps(event_ids),
                ],
            )
        else:
            await self.redis.xack(self.stream_key, self.group, *entry_ids)
        by_type: dict[str, int] = {}
        for o in acks:
            if o.event_type == _NOT_OURS:
                continue
            by_type[o.event_type] = by_type.get(o.event_type, 0) + 1
        for event_type, count in by_type.items():
            self._counters(event_type).acknowledged.inc(count)

    def _dead_letter_fields(self, outcome: _Outcome) -> list[str | bytes | int]:
        error = outcome.error
        original: bytes | str = outcome.raw.get(b"event") or json.dumps(
            {_text(k): v.decode(errors="replace") for k, v in outcome.raw.items()}
        )
        return [
            "event", original,
            "error_type", type(error).__name__ if error else "",
            "error_message", str(error)[:2000] if error else "",
            "reason", outcome.reason,
            "attempts", outcome.attempt,
            "original_id", outcome.entry_id,
            "stream", self.stream,
            "group", self.group,
            "service", self.service,
            "failed_at_ms", int(time.time() * 1000),
        ]  # fmt: skip

    # -- keep-alive, reclaim, retries, housekeeping --------------------------

    async def _keepalive_loop(self) -> None:
        interval = self.settings.keepalive_interval_ms / 1000
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=interval)
                return
            held = list(self._in_flight)
            if not held:
                continue
            lost = await self._guarded(
                "keepalive",
                lambda held=held: scripts.KEEPALIVE(  # type: ignore[misc]
                    self.redis, keys=[self.stream_key], args=[self.group, self.name, *held]
                ),
            )
            if lost:
                still_running = [i for i in map(_text, lost) if i in self._in_flight]
                if still_running:
                    log.warning(
                        "entries in hand were claimed by a sibling or removed",
                        count=len(still_running),
                        stream=self.stream,
                    )

    async def _beat(self) -> None:
        await scripts.HEARTBEAT(self.redis, keys=[self.heartbeats_key], args=[self.name])

    def _in_touch_for(self, seconds: float) -> bool:
        """Has this consumer reached Redis without a break for ``seconds``? Only then may it
        judge siblings by their heartbeats or idle times: after an outage every sibling looks
        silent, though the live ones beat and refresh their entries again within one interval."""
        return (
            self._in_touch_since is not None and time.monotonic() - self._in_touch_since >= seconds
        )

    async def _heartbeat_loop(self) -> None:
        """Beat every interval; then take over what consumers that stopped beating hold."""
        interval = self.settings.heartbeat_interval_ms / 1000
        while not self._stopping.is_set():
            await self._pause(interval)
            if self._stopping.is_set():
                break
            beat = await self._guarded("heartbeat", self._beat_and_note)
            if beat is None:
                self._in_touch_since = None  # Redis away: judge nobody until back a while
                continue
            if self._in_touch_for(self.settings.heartbeat_timeout_ms / 1000):
                while await self._claim_entries("dead", min_idle_ms=0):
                    pass
        await self._closing.wait()
        if not self._cut_off:  # nothing of ours is left pending: we are simply gone
            with contextlib.suppress(*REDIS_DOWN, ResponseError):
                await self.redis.hdel(self.heartbeats_key, self.name)

    async def _beat_and_note(self) -> bool:
        await self._beat()
        if self._in_touch_since is None:
            self._in_touch_since = time.monotonic()
        return True

    async def _reclaim_loop(self) -> None:
        interval = self.settings.reclaim_interval_ms / 1000
        next_housekeeping = time.monotonic()
        # a sibling's keep-alive refreshes what it holds every keepalive interval: after an
        # outage, wait that long (and a heartbeat timeout) in touch before calling it idle
        settle_s = max(self.settings.keepalive_interval_ms, self.settings.heartbeat_timeout_ms)
        while True:
            await self._pause(interval)
            if self._stopping.is_set():
                return
            if not self._in_touch_for(settle_s / 1000):
                continue
            while await self._claim_entries(
                "stale", min_idle_ms=self.settings.visibility_timeout_ms
            ):
                eventloop.raise_if_cancelled()
            eventloop.raise_if_cancelled()
            if time.monotonic() >= next_housekeeping:
                await self._guarded("remove-idle-consumers", self._remove_idle_consumers)
                # a replica of an older version may still schedule retries the old way
                await self._guarded("carry-over", self._carry_over_legacy)
                # s: often enough to honour the idle limit, rarely enough to be free
                next_housekeeping = time.monotonic() + min(
                    60.0, self.settings.consumer_idle_remove_ms / 2000
                )

    async def _promote_loop(self) -> None:
        """Move due items of the stream's delay store onto the stream, batch after batch, then
        sleep until the next falls due (at most ``promote_interval_ms``; a local park wakes it).

        Every consumer of the stream runs one: promotion is atomic per batch, so replicas
        (and other groups' consumers) running side by side never promote an item twice.
        """
        longest_s = self.settings.promote_interval_ms / 1000
        while not self._stopping.is_set():
            self._promote_soon.clear()
            promotion = await self._guarded(
                "promote", lambda: self.delay.promote_due(batch=self.settings.promote_batch)
            )
            if promotion is not None and promotion.promoted >= self.settings.promote_batch:
                continue  # more may be due: no sleep between full batches
            wait_s = longest_s
            if promotion is not None and promotion.next_due_ms is not None:
                wait_s = min(max((promotion.next_due_ms - time.time() * 1000) / 1000, 0.0), wait_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._promote_soon.wait(), timeout=wait_s)

    async def _carry_over_legacy(self) -> None:
        moved = await self.delay.carry_over_legacy(self.group)
        if moved:
            log.info(
                "carried retries of the old schedule over to the delay store",
                stream=self.stream,
                group=self.group,
                count=moved,
            )

    async def _remove_idle_consumers(self) -> None:
        for consumer in await self.redis.xinfo_consumers(self.stream_key, self.group):
            name = _text(consumer["name"])
            if (
                name != self.name
                and consumer["pending"] == 0
                and consumer["idle"] > self.settings.consumer_idle_remove_ms
            ):
                await self.redis.xgroup_delconsumer(self.stream_key, self.group, name)
                metrics.CONSUMERS_REMOVED.labels(self.stream, self.group).inc()
                log.info("removed idle consumer", consumer=name, idle_ms=consumer["idle"])
