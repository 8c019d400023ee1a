"""A publisher that can send an event type's stream elsewhere (``WEBHOOKS_STREAM_ROUTES``).

Tests route the service's own streams to names unique to the test, so that they
never write a key they did not create; staging can do the same. The routing itself
is the runtime :class:`~riverbed.publisher.Publisher`'s ``routes``.
"""

from __future__ import annotations

from collections.abc import Mapping

from riverbed.connection import Redis
from riverbed.publisher import Publisher


class RoutingPublisher(Publisher):
    def __init__(
        self,
        redis: Redis,
        routes: Mapping[str, str],
        *,
        max_length: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(redis, max_length=max_length, routes=routes)
