"""A publisher that can send an event type's stream elsewhere (``WEBHOOKS_STREAM_ROUTES``).

Tests route the service's own streams to names unique to the test, so that they
never write a key they did not create; staging can do the same. Without routes
it is the runtime's :class:`~riverbed.publisher.Publisher`, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from riverbed.connection import Redis
from riverbed.publisher import Publisher
from riverbed_contracts import CloudEvent
from riverbed_contracts.registry import get_spec


class RoutingPublisher(Publisher):
    def __init__(
        self,
        redis: Redis,
        routes: Mapping[str, str],
        *,
        max_length: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(redis, max_length=max_length)
        self.routes = dict(routes)

    def stream_for(self, event_type: str) -> str:
        """Where events of ``event_type`` go: the registry's stream, or its route."""
        stream = get_spec(event_type).stream
        return self.routes.get(stream, stream)

    async def publish(self, event: CloudEvent, *, stream: str | None = None) -> str:
        return await super().publish(event, stream=stream or self.stream_for(event.type))

    async def publish_many(
        self, events: Sequence[CloudEvent], *, stream: str | None = None, validated: bool = False
    ) -> list[str]:
        if stream is not None or not self.routes:
            return await super().publish_many(events, stream=stream, validated=validated)
        if not validated:  # all or none: validate every event before writing any
            for event in events:
                get_spec(event.type).model.model_validate(event.data)
        by_stream: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            by_stream.setdefault(self.stream_for(event.type), []).append(index)
        ids: list[str] = [""] * len(events)
        for target, indexes in by_stream.items():
            published = await super().publish_many(
                [events[i] for i in indexes], stream=target, validated=True
            )
            for index, entry_id in zip(indexes, published, strict=True):
                ids[index] = entry_id
        return ids
