"""What a service's lifespan receives and yields (see :mod:`riverbed.service`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

from riverbed.connection import Redis
from riverbed.publisher import Publisher
from riverbed.settings import RedisSettings, ServiceSettings

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)
ContainerT = TypeVar("ContainerT")


@dataclass(frozen=True)
class Resources:
    """What the runtime opens for every service before the service's lifespan runs."""

    redis: Redis  # where the streams live (REDIS_URL)
    cache_redis: Redis  # where the global cache lives: REDIS_CACHE_URL's Redis, else ``redis``
    publisher: Publisher  # appends to ``redis``
    redis_settings: RedisSettings  # e.g. to open a second pool with other limits


#: A service's lifespan: settings and the runtime's resources in, the container yielded.
Lifespan = Callable[[SettingsT, Resources], contextlib.AbstractAsyncContextManager[ContainerT]]


@contextlib.asynccontextmanager
async def no_resources(settings: ServiceSettings, resources: Resources) -> AsyncIterator[None]:
    """The lifespan of a service that needs nothing beyond Redis: its container is None."""
    yield None
