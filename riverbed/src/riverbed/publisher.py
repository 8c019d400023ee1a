"""Publishing events onto their streams: one, or a batch in one round trip per stream.

Every event is validated against its contract before it is written, so nothing
malformed reaches the wire. The target stream comes from the registry.
Delivery later: ``deliver_at`` keeps events in the stream's delay store until then
(``riverbed.delay``); consumers of the stream promote them when due.
Retention: an optional approximate ``MAXLEN`` per stream is the hard memory cap;
everyday trimming (only what every group acknowledged) is ``StreamMonitor.trim_acknowledged``.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

from riverbed import keys, metrics, tracing
from riverbed.connection import Redis
from riverbed.delay import DelayStore
from riverbed.entry_ids import as_text
from riverbed.scripts import RUNTIME_SCRIPTS, LuaScript
from riverbed_contracts import ENTRY_FIELD, CloudEvent
from riverbed_contracts.registry import get_spec

#: append many events to one stream in one call (KEYS, ARGV: its file in riverbed/lua/)
_APPEND_ALL: Final = LuaScript.load(RUNTIME_SCRIPTS, "publisher_append_all")

_stream_key = lru_cache(maxsize=1024)(keys.stream_key)


@lru_cache(maxsize=1024)
def _published(stream: str, event_type: str) -> Any:
    """The ``PUBLISHED`` child of a stream and type, looked up once (labels() locks)."""
    return metrics.PUBLISHED.labels(stream, event_type)


#: every logical stream this process appended to: the service trims those nobody consumes
#: by age (``riverbed.monitor.StreamMonitor.apply_retention``)
_WRITTEN: set[str] = set()


def written_streams() -> frozenset[str]:
    """The logical streams this process has appended events to."""
    return frozenset(_WRITTEN)


class Publisher:
    def __init__(
        self,
        redis: Redis,
        *,
        max_length: Mapping[str, int] | None = None,
        routes: Mapping[str, str] | None = None,
    ) -> None:
        """``max_length``: logical stream -> approximate cap on its length (entries).
        ``routes``: logical stream -> the stream its events go to instead (tests, tenants).
        """
        self.redis = redis
        self.max_length = dict(max_length or {})
        self.routes = dict(routes or {})
        self._coalesced: _CoalescedAppends | None = None  # made by the first publish_coalesced

    def stream_for(self, event_type: str) -> str:
        """Where events of ``event_type`` go: the registry's stream, or its route."""
        stream = get_spec(event_type).stream
        return self.routes.get(stream, stream)

    def _target(self, event: CloudEvent, stream: str | None, validate: bool) -> str:
        if validate:
            get_spec(event.type).model.model_validate(event.data)  # raises ValidationError
        return stream or self.stream_for(event.type)

    async def publish(
        self,
        event: CloudEvent,
        *,
        stream: str | None = None,
        validated: bool = False,
        deliver_at: datetime | None = None,
        owner: str = "",
    ) -> str:
        """Append one event to its stream (``stream`` overrides the registry's); returns the
        entry id. With ``deliver_at`` in the future the event waits in the delay store instead
        and ``""`` is returned: it gets its entry id when promoted (a ``deliver_at`` in the
        past means now). ``owner`` is who may look it up or cancel it (``DelayStore``)."""
        [event] = tracing.stamp([event])  # the current span's context, when tracing is on
        target = self._target(event, stream, not validated)
        _WRITTEN.add(target)
        if deliver_at is not None and _epoch_ms(deliver_at) > time.time() * 1000:
            await self.publish_later(
                [event], deliver_at, stream=target, validated=True, owner=owner
            )
            return ""
        started = time.perf_counter()
        entry_id = await self.redis.xadd(
            _stream_key(target),
            {ENTRY_FIELD: event.to_json()},
            maxlen=self.max_length.get(target),
            approximate=True,
        )
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        metrics.PUBLISHED.labels(target, event.type).inc()
        return as_text(entry_id)

    async def publish_coalesced(self, event: CloudEvent, *, validated: bool = False) -> str:
        """:meth:`publish` now, for one event, sharing a round trip: the appends asked for
        during one turn of the event loop go to Redis together, one call a stream (see
        :class:`_CoalescedAppends`: one stream failing fails only its callers). For many concurrent
        callers of one event each (the gateway's single-event requests); with tracing on,
        each append stays a command of its own, a child of its caller's span."""
        if tracing.tracing_enabled():
            return await self.publish(event, validated=validated)
        [event] = tracing.stamp([event])
        target = self._target(event, None, not validated)
        _WRITTEN.add(target)
        if self._coalesced is None:
            self._coalesced = _CoalescedAppends(self.redis)
        started = time.perf_counter()
        entry_id = await self._coalesced.add(
            _stream_key(target), event.to_json(), self.max_length.get(target)
        )
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        _published(target, event.type).inc()
        return as_text(entry_id)

    async def publish_later(
        self,
        events: Sequence[CloudEvent],
        deliver_at: datetime,
        *,
        stream: str | None = None,
        validated: bool = False,
        owner: str = "",
    ) -> list[bool]:
        """Keep events in their streams' delay stores until ``deliver_at``; one flag per event,
        False when an event of that id is already waiting (or was promoted lately): publishing
        the same event for later twice keeps it once. All are validated before any is kept."""
        events = tracing.stamp(events)
        by_stream: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            by_stream.setdefault(self._target(event, stream, not validated), []).append(index)
        due_ms = _epoch_ms(deliver_at)
        flags = [False] * len(events)
        for target, indexes in by_stream.items():
            kept = await DelayStore(self.redis, target).schedule(
                [events[i] for i in indexes], due_ms, owner=owner
            )
            for index, flag in zip(indexes, kept, strict=True):
                flags[index] = flag
        for target, indexes in by_stream.items():
            for index in indexes:
                if flags[index]:
                    metrics.DELAYED_PUBLISHED.labels(target, events[index].type).inc()
        return flags

    async def publish_many(
        self, events: Sequence[CloudEvent], *, stream: str | None = None, validated: bool = False
    ) -> list[str]:
        """Append events, one round trip per target stream; ids come back in event order.

        All are validated (and serialized) before any is sent, so an invalid event means
        none is published. ``validated=True`` skips validating data the caller has just
        validated itself.
        """
        by_stream: dict[str, list[int]] = {}
        events = tracing.stamp(events)
        documents = [event.to_json() for event in events]
        for index, event in enumerate(events):
            by_stream.setdefault(self._target(event, stream, not validated), []).append(index)
        if not by_stream:
            return []
        _WRITTEN.update(by_stream)
        started = time.perf_counter()
        entry_ids: list[str] = [""] * len(events)
        for target, indexes in by_stream.items():
            appended = await _APPEND_ALL(
                self.redis,
                keys=[_stream_key(target)],
                args=[
                    ENTRY_FIELD,
                    self.max_length.get(target, 0),
                    *(documents[i] for i in indexes),
                ],
            )
            for index, entry_id in zip(indexes, appended, strict=True):
                entry_ids[index] = as_text(entry_id)
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        counts = Counter((target, events[i].type) for target, ix in by_stream.items() for i in ix)
        for (target, event_type), count in counts.items():
            metrics.PUBLISHED.labels(target, event_type).inc(count)
        return entry_ids


class _CoalescedAppends:
    """``XADD``s asked for during one turn of the event loop, sent together.

    The first append of a turn schedules the send for the next turn; every append asked
    for until then joins it. The turn's appends to one stream go in one call of the
    append-all script (one command to pack and one reply to parse, instead of a pipeline
    of ``XADD``s, each packed and parsed on its own by redis-py); one stream's failure
    (say, its key holds another type) fails only the callers of that stream, as every
    ``XADD`` of it would have failed alike.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        #: (stream key, document, approximate MAXLEN, the caller's future) of this turn
        self._waiting: list[tuple[str, str, int | None, asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()  # strong references until done

    def add(self, key: str, document: str, max_length: int | None) -> asyncio.Future[Any]:
        """The future of one append's entry id."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._waiting:
            # a fresh context: the send belongs to no one caller's (log fields, spans)
            loop.call_soon(self._send_waiting, context=contextvars.Context())
        self._waiting.append((key, document, max_length, future))
        return future

    def _send_waiting(self) -> None:
        batch, self._waiting = self._waiting, []
        by_stream: dict[tuple[str, int | None], list[tuple[str, asyncio.Future[Any]]]] = {}
        for key, document, max_length, future in batch:
            by_stream.setdefault((key, max_length), []).append((document, future))
        loop = asyncio.get_running_loop()
        for (key, max_length), appends in by_stream.items():
            task = loop.create_task(self._send(key, max_length, appends))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(
        self, key: str, max_length: int | None, appends: list[tuple[str, asyncio.Future[Any]]]
    ) -> None:
        try:
            if len(appends) == 1 or max_length == 0:
                # alone in its turn: a plain XADD; a cap of 0, which the script reads as none
                results: list[Any] = await asyncio.gather(
                    *(
                        self._redis.xadd(
                            key, {ENTRY_FIELD: document}, maxlen=max_length, approximate=True
                        )
                        for document, _ in appends
                    ),
                    return_exceptions=True,
                )
            else:
                results = await _APPEND_ALL(
                    self._redis,
                    keys=[key],
                    args=[ENTRY_FIELD, max_length or 0, *(document for document, _ in appends)],
                )
        except asyncio.CancelledError:
            for _, future in appends:
                future.cancel()
            raise
        except Exception as error:  # the stream's appends failed: each of its callers learns it
            for _, future in appends:
                if not future.done():  # its caller was cancelled meanwhile
                    future.set_exception(error)
            return
        for (_, future), result in zip(appends, results, strict=True):
            if future.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def _epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("deliver_at must be timezone-aware (a naive time is ambiguous)")
    return int(moment.timestamp() * 1000)
