"""What tests share: Redis servers, helpers of consumer tests, scratch databases.

Importing this package never imports pytest, so benchmarks and scripts can start a
``RedisServer`` with the runtime alone. The fixtures live in :mod:`riverbed.testing.plugin`,
which pytest loads for every run (``-p riverbed.testing.plugin`` in the root pyproject).
"""

from __future__ import annotations

from riverbed.testing.databases import ScratchDatabase, postgres_unreachable, scratch_database
from riverbed.testing.helpers import (
    TEST_STREAM,
    TEST_TYPE,
    ConsumerFactory,
    Processes,
    fast_settings,
    make_event,
    message_for,
    wait_for,
)
from riverbed.testing.servers import (
    CLUSTER_SLOTS,
    NO_REDIS_HELP,
    LocalRedisCluster,
    RedisServer,
    docker_redis_url,
    free_port,
    redis_cli_args,
    sync_redis_client,
)

__all__ = [
    "CLUSTER_SLOTS",
    "NO_REDIS_HELP",
    "TEST_STREAM",
    "TEST_TYPE",
    "ConsumerFactory",
    "LocalRedisCluster",
    "Processes",
    "RedisServer",
    "ScratchDatabase",
    "docker_redis_url",
    "fast_settings",
    "free_port",
    "make_event",
    "message_for",
    "postgres_unreachable",
    "redis_cli_args",
    "scratch_database",
    "sync_redis_client",
    "wait_for",
]
