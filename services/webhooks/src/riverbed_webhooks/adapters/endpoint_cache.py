"""Endpoint lookups of the hot path through the runtime's global cache.

Two namespaces: ``<ns>.endpoint`` (endpoint id -> the endpoint, or "none": a
deleted endpoint's tasks don't hit the database each time) and ``<ns>.routes``
(event type -> ids of the enabled endpoints that want it). Every change of an
endpoint deletes its entry and bumps the routes namespace's version. Entries
hold signing secrets: the cache's Redis is as trusted as the database.
"""

from __future__ import annotations

from datetime import timedelta

from riverbed.cache import Cache, PydanticCodec
from riverbed_webhooks.domain.matching import matching_endpoint_ids
from riverbed_webhooks.domain.model import Endpoint
from riverbed_webhooks.service_layer.ports import EndpointRepository


class CachedEndpoints:
    """:class:`~riverbed_webhooks.service_layer.ports.EndpointCache` over :class:`Cache`."""

    def __init__(
        self, cache: Cache, repository: EndpointRepository, *, namespace: str, ttl: timedelta
    ) -> None:
        self._repository = repository
        self._by_id = cache.namespace(
            f"{namespace}.endpoint", ttl=ttl, codec=PydanticCodec[Endpoint | None](Endpoint | None)
        )
        self._routes = cache.namespace(
            f"{namespace}.routes", ttl=ttl, codec=PydanticCodec[list[str]](list[str])
        )

    async def endpoint(self, endpoint_id: str) -> Endpoint | None:
        return await self._by_id.get_or_load(endpoint_id, lambda: self._repository.get(endpoint_id))

    async def endpoint_ids_for(self, event_type: str) -> list[str]:
        async def load() -> list[str]:
            return matching_endpoint_ids(await self._repository.list_enabled(), event_type)

        return await self._routes.get_or_load(event_type, load)

    async def invalidate(self, endpoint_id: str) -> None:
        await self._by_id.delete(endpoint_id)
        await self._routes.invalidate_all()
