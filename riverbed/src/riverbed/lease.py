"""A lease in Redis: one replica at a time runs a piece of work, and a crashed holder's
lease lapses so another can take the work over.

``await run_exclusively(redis, key, work, ttl_ms=…)`` takes the lease (``SET NX PX``
with a random token), runs ``work()`` while renewing the lease every third of its TTL,
and gives it back at the end. It returns ``False`` without running anything when
another holder has the lease. When the lease cannot be renewed — taken over after a
pause longer than the TTL, or Redis unreachable until the TTL ran out — the work is
cancelled: from then on another replica may be running it, so this one must stop.
Renewal and release only touch a lease that still holds this holder's token.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from riverbed.connection import Redis
from riverbed.errors import RiverbedError
from riverbed.scripts import RUNTIME_SCRIPTS, LuaScript

log = structlog.get_logger(__name__)

# KEYS and ARGV of each script: the header of its file in riverbed/lua/.

#: extend the lease's TTL while it is still ours
_RENEW: Final = LuaScript.load(RUNTIME_SCRIPTS, "lease_renew")
#: delete the lease while it is still ours
_RELEASE: Final = LuaScript.load(RUNTIME_SCRIPTS, "lease_release")

_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


class LeaseLost(RiverbedError):
    """The lease lapsed or was taken over while the work ran; the work was cancelled."""


async def run_exclusively(
    redis: Redis, key: str, work: Callable[[], Awaitable[object]], *, ttl_ms: int
) -> bool:
    """Run ``work()`` holding the lease ``key``; ``False`` if another holder has it.

    Raises :class:`LeaseLost` when the lease could not be kept (the work was cancelled),
    and whatever ``work`` raises.
    """
    token = secrets.token_hex(16)
    if not await redis.set(key, token, nx=True, px=ttl_ms):
        return False
    task = asyncio.ensure_future(work())
    keeper = asyncio.create_task(_keep(redis, key, token, ttl_ms, task), name=f"lease:{key}")
    try:
        await asyncio.wait({task}, return_when=asyncio.ALL_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise
    finally:
        lost = keeper.done() and not keeper.cancelled() and keeper.result()
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        if not lost:
            with contextlib.suppress(*_REDIS_DOWN):  # it lapses by its TTL anyway
                await _RELEASE(redis, keys=[key], args=[token])
    if lost and task.cancelled():
        raise LeaseLost(f"lease {key} lapsed or was taken over; the work was cancelled")
    task.result()  # the work's own exception, if any
    return True


async def _keep(
    redis: Redis, key: str, token: str, ttl_ms: int, task: asyncio.Future[object]
) -> bool:
    """Renew every third of the TTL; cancel ``task`` and return True once the lease is lost."""
    renewed_at = time.monotonic()
    while not task.done():
        await asyncio.sleep(ttl_ms / 3000)  # s
        try:
            if await _RENEW(redis, keys=[key], args=[token, ttl_ms]):
                renewed_at = time.monotonic()
                continue
            log.warning("lease taken over: stopping the work", lease=key)
        except Exception as error:  # Redis unreachable, a failover's READONLY...
            if time.monotonic() - renewed_at < ttl_ms / 1000:
                log.warning("could not renew a lease; retrying", lease=key, error=str(error))
                continue
            log.warning("lease lapsed while Redis was unreachable: stopping", lease=key)
        task.cancel()
        return True
    return False
