"""Publishing events onto their streams: one, or a batch in one round trip.

Every event is validated against its contract before it is written, so nothing
malformed reaches the wire. The target stream comes from the registry.
Retention: an optional approximate ``MAXLEN`` per stream is the hard memory cap;
everyday trimming (only what every group acknowledged) is ``riverbed.retention``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from riverbed import keys, metrics
from riverbed.connection import Redis
from riverbed_contracts import CloudEvent
from riverbed_contracts.registry import get_spec


class Publisher:
    def __init__(self, redis: Redis, *, max_length: Mapping[str, int] | None = None) -> None:
        """``max_length``: logical stream -> approximate cap on its length (entries)."""
        self.redis = redis
        self.max_length = dict(max_length or {})

    def _prepare(
        self, event: CloudEvent, stream: str | None, validate: bool = True
    ) -> tuple[str, str, dict[Any, Any]]:
        spec = get_spec(event.type)
        if validate:
            spec.model.model_validate(event.data)  # raises pydantic.ValidationError
        target = stream or spec.stream
        return target, keys.stream_key(target), event.to_entry()

    async def publish(self, event: CloudEvent, *, stream: str | None = None) -> str:
        """Append one event to its stream (``stream`` overrides the registry's); returns the id."""
        stream, key, entry = self._prepare(event, stream)
        started = time.perf_counter()
        entry_id = await self.redis.xadd(
            key,
            entry,
            maxlen=self.max_length.get(stream),
            approximate=True,
        )
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        metrics.PUBLISHED.labels(stream, event.type).inc()
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def publish_many(
        self, events: Sequence[CloudEvent], *, stream: str | None = None, validated: bool = False
    ) -> list[str]:
        """Append events in one pipelined round trip (validated first: all or none are sent).

        ``validated=True`` skips validating data the caller has just validated itself.
        """
        prepared = [self._prepare(event, stream, not validated) for event in events]
        if not prepared:
            return []
        started = time.perf_counter()
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, key, entry in prepared:
                pipe.xadd(key, entry, maxlen=self.max_length.get(stream), approximate=True)
            entry_ids = await pipe.execute()
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        for (stream, _, _), event in zip(prepared, events, strict=True):
            metrics.PUBLISHED.labels(stream, event.type).inc()
        return [i.decode() if isinstance(i, bytes) else str(i) for i in entry_ids]
