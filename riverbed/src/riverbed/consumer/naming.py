"""Consumer names: the platform's stable one, unless a live process already uses it."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

import structlog

from riverbed import keys
from riverbed.connection import Redis
from riverbed.consumer.types import Subscription
from riverbed.settings import ConsumerSettings

# the package's name, not this module's: log lines keep the logger they always had
log = structlog.get_logger(__package__)


def default_consumer_name() -> str:
    """``HOSTNAME`` from the environment where the platform sets it (a Kubernetes pod's or a
    container's name: stable across restarts of a StatefulSet pod, so a restarted pod
    re-reads its own pending entries first), else host and pid (unique per process)."""
    return os.environ.get("HOSTNAME") or f"{socket.gethostname()}-{os.getpid()}"


async def unused_consumer_name(
    redis: Redis, subscriptions: Sequence[Subscription], name: str, settings: ConsumerSettings
) -> str:
    """``name``, or ``name-<pid>`` when a live process already consumes under ``name`` (its
    heartbeat is fresh): two processes sharing one name would take each other's entries."""
    now_ms = await _redis_time_ms(redis)
    for subscription in subscriptions:
        beat = await redis.hget(keys.heartbeats_key(subscription.stream, subscription.group), name)
        if beat is not None and now_ms - int(beat) < settings.heartbeat_timeout_ms:
            fallback = f"{name}-{os.getpid()}"
            log.warning(
                "consumer name in use by a live process; using another",
                consumer=name,
                instead=fallback,
                stream=subscription.stream,
            )
            return fallback
    return name


async def _redis_time_ms(redis: Redis) -> int:
    seconds, microseconds = await redis.time()
    return int(seconds) * 1000 + int(microseconds) // 1000
