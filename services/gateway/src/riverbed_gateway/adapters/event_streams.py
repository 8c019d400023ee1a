"""Appending events to their Redis streams, now or later (through the streams' delay
stores), with the runtime's :class:`~riverbed.publisher.Publisher`; with a
:class:`~riverbed_gateway.adapters.replication.Replication`, each request's appends are
acknowledged by replicas (``WAIT``) before they count as done."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from riverbed.delay import DelayStore
from riverbed.publisher import Publisher
from riverbed_contracts import CloudEvent
from riverbed_gateway.adapters.replication import Replication
from riverbed_gateway.domain.delivery import whole_ms


class RedisEventStreams:
    def __init__(self, publisher: Publisher, replication: Replication | None = None) -> None:
        self.publisher = publisher
        self.replication = replication

    def stream_for(self, event_type: str) -> str:
        return self.publisher.stream_for(event_type)

    @asynccontextmanager
    async def _replicated(self, replication: Replication) -> AsyncIterator[Publisher]:
        """A publisher whose writes ``replication`` must see acknowledged at the exit."""
        async with replication.pinned(self.publisher.redis) as pinned:
            yield Publisher(
                pinned, max_length=self.publisher.max_length, routes=self.publisher.routes
            )

    async def append(self, event: CloudEvent, *, validated: bool) -> str:
        if self.replication is None:
            return await self.publisher.publish(event, validated=validated)
        async with self._replicated(self.replication) as publisher:
            return await publisher.publish(event, validated=validated)

    async def append_validated(self, event: CloudEvent) -> str:
        if self.replication is None:  # WAIT vouches only for its own connection's writes
            return await self.publisher.publish_coalesced(event, validated=True)
        return await self.append(event, validated=True)

    async def append_many(self, events: Sequence[CloudEvent]) -> list[str]:
        if self.replication is None:
            return await self.publisher.publish_many(events, validated=True)
        async with self._replicated(self.replication) as publisher:
            return await publisher.publish_many(events, validated=True)

    async def append_and_keep(
        self, events: Sequence[CloudEvent], later: Mapping[int, datetime], owner: str, now_ms: int
    ) -> tuple[list[str | None], dict[int, int]]:
        """Publish the events due now and keep the others for later (:meth:`_append_and_keep`),
        acknowledged by replicas together when replication is required."""
        if self.replication is None:
            return await self._append_and_keep(self.publisher, events, later, owner, now_ms)
        async with self._replicated(self.replication) as publisher:
            return await self._append_and_keep(publisher, events, later, owner, now_ms)

    async def _append_and_keep(
        self,
        publisher: Publisher,
        events: Sequence[CloudEvent],
        later: Mapping[int, datetime],
        owner: str,
        now_ms: int,
    ) -> tuple[list[str | None], dict[int, int]]:
        """Publish the events due now and keep the others for later, side by side: one script
        per stream for those due now, one per stream and due time for the others.

        Returns the entry ids (None for an event kept) and when each kept event is due (ms): an
        event whose id was already waiting is not kept twice, and its time is the waiting
        one's (the request's when it was already delivered, or waits under another key).
        """
        for event in events:  # every one serializable before any is sent (all or none)
            event.to_json()
        now_indexes = [index for index in range(len(events)) if index not in later]
        by_due: dict[int, list[int]] = {}  # due ms -> indexes: one script per stream and time
        for index, moment in later.items():
            by_due.setdefault(whole_ms(moment), []).append(index)

        async def publish_now() -> list[str]:
            if not now_indexes:
                return []
            return await publisher.publish_many(
                [events[index] for index in now_indexes], validated=True
            )

        async def keep(indexes: list[int]) -> list[bool]:
            return await publisher.publish_later(
                [events[index] for index in indexes],
                later[indexes[0]],  # every moment of the group is the same whole ms
                validated=True,
                owner=owner,
            )

        appended, kept = await asyncio.gather(
            publish_now(), asyncio.gather(*(keep(indexes) for indexes in by_due.values()))
        )
        entry_ids: list[str | None] = [None] * len(events)
        for index, entry_id in zip(now_indexes, appended, strict=True):
            entry_ids[index] = entry_id
        due = {index: whole_ms(moment) for index, moment in later.items()}
        already = [
            index
            for indexes, flags in zip(by_due.values(), kept, strict=True)
            for index, flag in zip(indexes, flags, strict=True)
            if not flag
        ]
        if already:
            due.update(await self._waiting_since(events, already, owner, now_ms))
        return entry_ids, due

    async def _waiting_since(
        self, events: Sequence[CloudEvent], indexes: list[int], owner: str, now_ms: int
    ) -> dict[int, int]:
        """When the events at ``indexes``, whose ids were already kept, are due (ms): the
        waiting one's time, or ``now_ms`` when it was delivered or waits under another key."""
        found = await asyncio.gather(
            *(
                DelayStore(self.publisher.redis, self.stream_for(events[i].type)).get(
                    events[i].id, owner=owner
                )
                for i in indexes
            )
        )
        return {
            index: round(waiting.deliver_at.timestamp() * 1000)
            if waiting is not None and waiting.deliver_at is not None
            else now_ms
            for index, waiting in zip(indexes, found, strict=True)
        }
