"""The start-up check of the Redis that holds the streams: an eviction policy that can
drop a stream loses events, so a service refuses to start on one.

Stream keys have no TTL. ``noeviction`` never drops a key (a full Redis refuses writes);
``volatile-*`` policies drop only keys with a TTL (cache entries, markers). An
``allkeys-*`` policy may drop a stream, its consumer groups' state or its delay store:
accepted events vanish without an error. The cache may have a Redis of its own with
``allkeys-lru`` (``REDIS_CACHE_URL``): that one is not checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from redis.exceptions import ResponseError

from riverbed.connection import Redis
from riverbed.errors import RiverbedError
from riverbed.redis_health import Node, nodes_of

log = structlog.get_logger(__name__)

#: sysexits.h EX_CONFIG: what ``Service.run`` exits with when the configuration is refused
EX_CONFIG = 78

ACCEPTED_POLICIES = (
    "noeviction, or a volatile-* policy (volatile-lru, volatile-lfu, volatile-random, "
    "volatile-ttl), which evicts only keys with a TTL"
)


class UnsafeRedisConfiguration(RiverbedError):
    """The streams' Redis could drop stream keys: the service does not start."""


@contextmanager
def exit_78_on_unsafe_redis() -> Iterator[None]:
    """Around a service's run from the command line: a refused Redis configuration is
    logged and exits with status 78 (EX_CONFIG), not with a traceback."""
    try:
        yield
    except UnsafeRedisConfiguration as refused:
        log.error("refusing to start", reason=str(refused))
        raise SystemExit(EX_CONFIG) from None


async def check_eviction_policy(redis: Redis) -> None:
    """Read ``maxmemory`` and ``maxmemory-policy`` of every primary ``redis`` reaches;
    raise :class:`UnsafeRedisConfiguration` on an ``allkeys-*`` policy, warn on no
    ``maxmemory``, and warn and go on when Redis tells neither (a managed Redis)."""
    for node in nodes_of(redis):
        if node.replica:
            continue
        policy, maxmemory = await _memory_settings(node)
        if policy is None:
            log.warning(
                "could not read Redis's maxmemory-policy (CONFIG GET and INFO refused): "
                f"make sure it is {ACCEPTED_POLICIES}",
                node=node.name,
            )
            continue
        if policy.startswith("allkeys-"):
            raise UnsafeRedisConfiguration(
                f"the Redis holding the streams ({node.name}) has maxmemory-policy {policy}, "
                "which can evict stream keys (they have no TTL) and lose accepted events. "
                f"Accepted: {ACCEPTED_POLICIES}. Set it in redis.conf or with "
                "`CONFIG SET maxmemory-policy noeviction`; a cache that needs allkeys-lru "
                "gets a Redis of its own (REDIS_CACHE_URL)."
            )
        if not maxmemory:
            log.warning(
                "Redis has no maxmemory limit: it grows until the host runs out of memory, "
                "with no early warning (alert RiverbedRedisMemoryHigh never fires); set "
                "maxmemory (deploy/redis/redis.conf)",
                node=node.name,
                maxmemory_policy=policy,
            )


async def _memory_settings(node: Node) -> tuple[str | None, int | None]:
    """(maxmemory-policy, maxmemory in bytes) from CONFIG GET, else from INFO memory."""
    try:
        found: dict[Any, Any] = await node.run("CONFIG GET", "maxmemory*")
        config = {_text(name): _text(value) for name, value in found.items()}
        return config.get("maxmemory-policy"), int(config.get("maxmemory", 0))
    except ResponseError as error:
        log.warning("Redis refuses CONFIG GET; reading INFO memory", error=str(error))
    try:
        info: dict[str, Any] = await node.run("INFO", "memory")
    except ResponseError:
        return None, None
    policy = info.get("maxmemory_policy")
    return (None if policy is None else _text(policy)), int(info.get("maxmemory", 0))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
