"""Events kept for later in the streams' delay stores (:class:`riverbed.delay.DelayStore`),
as the scheduled-events use case looks them up and cancels them."""

from __future__ import annotations

from typing import Literal

from riverbed import keys
from riverbed.connection import Redis
from riverbed.delay import DelayedEvent, DelayStore, event_member, promoted_by


class RedisDelayedEvents:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def holders(
        self, key_id: str, event_ids: tuple[str, ...], streams: tuple[str, ...]
    ) -> list[tuple[str, str]]:
        """(event id, stream) pairs whose delay store waits for an event of that id (anyone's:
        ``DelayStore`` then checks the owner) or lately promoted one of this key's, in the
        order of ``event_ids``. One pipeline, two score lookups a stream and id."""
        if not streams:
            return []
        pairs = [(event_id, stream) for event_id in event_ids for stream in streams]
        async with self._redis.pipeline(transaction=False) as pipe:
            for event_id, stream in pairs:
                pipe.zscore(keys.delay_key(stream), event_member(event_id))
                pipe.zscore(keys.delay_promoted_key(stream), promoted_by(key_id, event_id))
            scores = await pipe.execute()
        return [
            pair
            for index, pair in enumerate(pairs)
            if scores[2 * index] is not None or scores[2 * index + 1] is not None
        ]

    async def get(self, stream: str, event_id: str, owner: str) -> DelayedEvent | None:
        return await DelayStore(self._redis, stream).get(event_id, owner=owner)

    async def cancel(
        self, stream: str, event_id: str, owner: str
    ) -> Literal["cancelled", "promoted", "missing"]:
        return await DelayStore(self._redis, stream).cancel(event_id, owner=owner)
