"""What every part of the consumer shares: its state, its group, and guarded Redis calls.

:class:`ConsumerBase` holds the bookkeeping (entries in hand, outcomes waiting, the events
that stop and wake the loops) that the reading, handling, outcome and housekeeping parts
work on; :class:`riverbed.consumer.StreamConsumer` puts those parts together.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, ResponseError

from riverbed import keys, metrics, scripts
from riverbed.backoff import Backoff
from riverbed.connection import Redis
from riverbed.consumer.decoding import plain_ids_json
from riverbed.consumer.types import NOT_OURS, REDIS_DOWN, Outcome, Subscription
from riverbed.delay import DelayStore
from riverbed.publisher import Publisher
from riverbed.redis_timing import observe_pipeline
from riverbed.settings import ConsumerSettings

# the package's name, not this module's: log lines keep the logger they always had
log = structlog.get_logger(__package__)


def read_entries(reply: Any) -> list[Any]:
    """The entries of one stream's ``XREADGROUP`` reply, whichever form it has: redis-py's
    (a list of (stream, entries) pairs), or Redis's own in RESP2 (the same, as lists) or
    RESP3 (a map of stream to entries); none for a read that found nothing."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return next(iter(reply.values()))
    return reply[0][1]  # type: ignore[no-any-return]


class ConsumerBase:
    """One consumer-group member's state on one stream, and the calls every part uses."""

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
        self._new_entries: dict[Any, Any] = {self.stream_key: ">"}  # XREADGROUP's STREAMS
        self._read_connection: AbstractConnection | None = None  # see _pipelined
        self._read_call_timeout_s: float | None = None
        self.heartbeats_key = keys.heartbeats_key(self.stream, self.group)
        self.backoff = subscription.backoff or Backoff(
            base_ms=settings.retry_base_ms,
            max_ms=settings.retry_max_ms,
            jitter=settings.retry_jitter,
        )
        # entries in hand: being handled, or read and waiting for a handler slot
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._handlers_running = 0  # bounded by settings.concurrency
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._handler_started: dict[str, float] = {}  # entry id -> perf_counter s
        self._timed_out: set[str] = set()  # entries whose handler was cancelled for its timeout
        self._events_in_hand: dict[str, str] = {}  # event id -> the entry handling it here
        self._cut_off = False  # handlers were cut off at shutdown: their entries stay pending
        self._in_touch_since: float | None = None  # monotonic s of the first beat since a break
        self._outcomes: list[Outcome] = []  # retries and dead letters waiting to be applied
        self._init_acknowledgements()
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

    def _init_acknowledgements(self) -> None:
        # acknowledgements waiting, as parallel lists rather than an object per message:
        # entry id, event id (None for another group's retry) and type of each
        self._ack_entry_ids: list[str] = []
        self._ack_event_ids: list[str | None] = []
        self._ack_types: list[str] = []
        # held while acknowledgements are on their way: only the holder drops them from the
        # front of the lists, so the read loop and the flush loop never take the same ones
        self._ack_lock = asyncio.Lock()
        # the read loop calls Redis again at once and takes the waiting acknowledgements
        # along: the flush loop leaves them to it (it is True while entries keep coming)
        self._acks_ride_along = False

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

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

    def _record(self, outcome: Outcome) -> None:
        if outcome.kind == "ack":
            self._record_ack(outcome.entry_id, outcome.event_type, outcome.event_id)
            return
        self._outcomes.append(outcome)
        self._outcome_ready.set()

    def _record_ack(self, entry_id: str, event_type: str, event_id: str | None) -> None:
        self._ack_entry_ids.append(entry_id)
        self._ack_event_ids.append(event_id)
        self._ack_types.append(event_type)
        self._outcome_ready.set()

    def _flush_due(self) -> bool:
        """Outcomes for the flush loop to apply: retries and dead letters, and successes
        unless the read loop takes them along on its next call."""
        return bool(self._outcomes) or (
            bool(self._ack_entry_ids) and (not self._acks_ride_along or self._closing.is_set())
        )

    async def _ack_check_read(
        self, *, acks: int = 0, check: Sequence[str] | str = (), read: int = 0
    ) -> tuple[list[int], list[Any]]:
        """Acknowledge the ``acks`` oldest waiting successes (the caller holds
        ``_ack_lock``), check the event ids ``check`` (or their JSON array; see
        :data:`~riverbed.scripts.ACK_CHECK`) and read up to ``read`` new entries
        (``XREADGROUP`` without blocking), all in one write (on a Cluster, two calls at
        once). Returns the flags of ``check`` (1: handled within the idempotency window)
        and the entries read. A failed call raises and leaves the successes waiting; had
        the read gone through, its entries stay pending and are reclaimed once idle."""
        keys = [self.stream_key, self.done_key]
        args: list[str | int] = [
            self.group,
            int(time.time() * 1000),
            self.settings.idempotency_ttl_s * 1000,
            plain_ids_json(self._ack_entry_ids[:acks]),  # digits and a dash: nothing to escape
            json.dumps([i for i in self._ack_event_ids[:acks] if i is not None]),
            check if isinstance(check, str) else json.dumps(list(check)),
        ]
        entries: Any = []
        if read:
            if isinstance(self.redis, RedisCluster):
                # a Cluster's pipeline refuses scripts: two calls at once, to the one node
                # that holds the stream's slot
                checked, entries = await asyncio.gather(
                    scripts.ACK_CHECK(self.redis, keys=keys, args=args),
                    self.redis.xreadgroup(self.group, self.name, self._new_entries, count=read),
                    return_exceptions=True,
                )
            else:
                read_new = ("GROUP", self.group, self.name, "COUNT", read, "STREAMS")
                checked, entries = await self._pipelined(
                    ("EVALSHA", scripts.ACK_CHECK.sha, len(keys), *keys, *args),
                    ("XREADGROUP", *read_new, self.stream_key, ">"),
                )
            if isinstance(entries, BaseException):
                raise entries
            if isinstance(checked, NoScriptError):  # a restarted or flushed Redis
                checked = await scripts.ACK_CHECK(self.redis, keys=keys, args=args)
            elif isinstance(checked, BaseException):
                raise checked
            entries = read_entries(entries)
        else:
            checked = await scripts.ACK_CHECK(self.redis, keys=keys, args=args)
        if acks:
            self._drop_acknowledged(acks)
        _acknowledged, flags = checked
        return flags, entries

    async def _pipelined(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send ``commands`` in one write on the read loop's own connection, then read
        their replies as Redis sends them (an error reply is returned, not raised).

        Its own connection, because the write must leave before this step of the event loop
        ends: the batch admitted just before is handled while Redis answers. A pooled call
        first waits its turn for a connection, and redis-py writes under a socket timeout
        from a task of its own (``asyncio.wait_for`` on Python 3.11); either way the
        handlers ran first and Redis only began when they were done (measured: ~0.9 ms of
        each 2.5 ms batch cycle spent waiting). The socket timeout bounds the whole call
        instead. Any failure drops the connection; the next call opens another."""
        connection = self._read_connection
        if connection is None:
            connection = self.redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
            self._read_call_timeout_s = connection.socket_timeout
            connection.socket_timeout = None  # writes inline; the call is bounded below
            self._read_connection = connection
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._read_call_timeout_s):
                if not connection.is_connected:
                    # connect() itself: a Sentinel's connection finds the master there (a
                    # send's implicit connect skips that and goes to the default address)
                    await connection.connect()
                await connection.send_packed_command(connection.pack_commands(commands))
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(await connection.read_response())
                    except ResponseError as error:  # the connection stays in step
                        replies.append(error)
        except BaseException:
            self._read_connection = None
            await connection.disconnect(nowait=True)
            raise
        observe_pipeline(time.perf_counter() - started)
        return replies

    async def _close_read_connection(self) -> None:
        if self._read_connection is not None:
            connection, self._read_connection = self._read_connection, None
            await connection.disconnect(nowait=True)

    def _drop_acknowledged(self, count: int) -> None:
        """The ``count`` oldest waiting successes are acknowledged: drop them, count them."""
        by_type = Counter(self._ack_types[:count])
        del self._ack_entry_ids[:count], self._ack_event_ids[:count], self._ack_types[:count]
        by_type.pop(NOT_OURS, None)
        for event_type, acknowledged in by_type.items():
            self._counters(event_type).acknowledged.inc(acknowledged)

    async def _wait_for_handler_slot(self) -> None:
        """Wait for a handler slot when all ``concurrency`` are taken (a free one the caller
        takes itself, without a call): entries in hand wait here in the order they came, one
        waiter woken a freed slot, which it gets counted as its own."""
        waiter = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(waiter)
        try:
            await waiter  # the slot is handed over with the wake-up: already counted
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give_back_handler_slot()  # woken and cancelled at once: pass it on
            else:
                self._slot_waiters.remove(waiter)
            raise

    def _give_back_handler_slot(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to it as it stands
                return
        self._handlers_running -= 1

    def _release(self, entry_id: str, event_id: str | None = None) -> None:
        self._in_flight.pop(entry_id, None)
        if event_id is not None and self._events_in_hand.get(event_id) == entry_id:
            del self._events_in_hand[event_id]
        self._slot_free.set()

    def _counters(self, event_type: str) -> metrics.MessageMetrics:
        found = self._by_type.get(event_type)
        if found is None:
            found = metrics.MessageMetrics.of(self.stream, self.group, event_type)
            self._by_type[event_type] = found
            # exported from 0, so the first timeout is an increase an alert rule can see
            metrics.HANDLER_TIMEOUTS.labels(self.stream, self.group, event_type)
        return found

    def _slow_handlers(self) -> int:
        """Handlers running longer than half their timeout (a gauge, read at scrape time)."""
        since = time.perf_counter() - self.handler_timeout_s / 2
        return sum(1 for started in list(self._handler_started.values()) if started < since)
