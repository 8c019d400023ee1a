"""How long the runtime's own Redis calls take, by command family.

:func:`riverbed.connection.connect` builds its clients from the classes here: redis-py's
asyncio ``Redis`` and ``RedisCluster`` with ``execute_command`` (one command) and their
pipelines' ``execute`` (one round trip for the whole batch) timed into
``riverbed_redis_command_seconds{family}``. Subclasses, not a patch of redis-py's classes:
other clients in the process (tests, instrumentation) are left as they are, and what runs
underneath (retries, MOVED handling, connection pools) is redis-py's own.

The cost is two clock reads, a dictionary look-up and one histogram observation a call:
about 1.1 µs, measured, where one XADD round trip on loopback takes some 70-80 µs (1.5 %)
and a pipeline of 100 about 1 ms (0.1 %).
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as redis_async
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster

from riverbed import metrics

#: what a command (its first word) counts as; anything not named here is "key"
_FAMILY_OF: dict[str, str] = {
    **dict.fromkeys(
        ("XRANGE", "XREVRANGE", "XLEN", "XPENDING", "XINFO", "XREAD", "XREADGROUP"),
        "stream-read",
    ),
    **dict.fromkeys(
        ("XADD", "XACK", "XCLAIM", "XAUTOCLAIM", "XTRIM", "XDEL", "XGROUP", "XSETID"),
        "stream-write",
    ),
    **dict.fromkeys(
        ("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO", "SCRIPT", "FUNCTION"),
        "script",
    ),
    **dict.fromkeys(
        (
            "PING",
            "INFO",
            "CONFIG",
            "SLOWLOG",
            "LATENCY",
            "CLIENT",
            "CLUSTER",
            "COMMAND",
            "DBSIZE",
            "TIME",
            "MEMORY",
            "DEBUG",
            "HELLO",
            "AUTH",
            "SELECT",
            "ECHO",
            "WAIT",
            "ROLE",
            "READONLY",
            "FLUSHDB",
            "FLUSHALL",
        ),
        "server",
    ),
}
#: reads that wait on the server (XREAD[GROUP] … BLOCK): their time is mostly the wait
_BLOCKING_READS = frozenset({"XREAD", "XREADGROUP"})
_BLOCK = frozenset({b"BLOCK", "BLOCK"})

#: every value of the ``family`` label (bounded: nothing else is ever observed)
FAMILIES = (
    "stream-read",
    "stream-read-blocking",
    "stream-write",
    "script",
    "key",
    "server",
    "pipeline",
)


def command_family(args: tuple[Any, ...]) -> str:
    """The ``family`` label of the command ``args`` (``("XADD", key, …)``)."""
    name = args[0]
    family = _FAMILY_CACHE.get(name)
    if family is None:
        family = _FAMILY_CACHE[name] = _classify(name)
    if family is _MAYBE_BLOCKING:
        blocking = any(isinstance(a, (bytes, str)) and a in _BLOCK for a in args)
        return "stream-read-blocking" if blocking else "stream-read"
    return family


_MAYBE_BLOCKING = "stream-read?"  # XREAD[GROUP]: blocking or not, as its arguments say
#: command name as given to execute_command -> family; as many entries as the code
#: uses command names, so it stays small
_FAMILY_CACHE: dict[Any, str] = {}


def _classify(name: Any) -> str:
    word = (name.decode() if isinstance(name, bytes) else str(name)).split(" ", 1)[0].upper()
    return _MAYBE_BLOCKING if word in _BLOCKING_READS else _FAMILY_OF.get(word, "key")


#: the histogram child of each family, looked up once
_OBSERVE = {family: metrics.REDIS_COMMAND_SECONDS.labels(family).observe for family in FAMILIES}
_PIPELINE = _OBSERVE["pipeline"]


def observe_pipeline(seconds: float) -> None:
    """Time a pipeline sent another way than through a client's ``pipeline()`` (the
    consumer's own read connection), as ``riverbed_redis_command_seconds{family="pipeline"}``."""
    _PIPELINE(seconds)


async def _timed(call: Any, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
    started = time.perf_counter()
    try:
        return await call(*args, **options)
    finally:
        _OBSERVE[command_family(args)](time.perf_counter() - started)


class TimedPipeline(Pipeline):
    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        started = time.perf_counter()
        try:
            return await super().execute(raise_on_error)
        finally:
            _PIPELINE(time.perf_counter() - started)


class TimedRedis(redis_async.Redis):
    """A single Redis (or one behind a Sentinel: ``master_for(redis_class=TimedRedis)``)."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await _timed(super().execute_command, args, options)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        # redis-py builds the pipeline (its arguments differ between versions); it is then
        # made a timed one, which only adds a method
        pipe = super().pipeline(transaction, shard_hint)
        pipe.__class__ = TimedPipeline
        return pipe


class TimedClusterPipeline(ClusterPipeline):
    __slots__ = ()  # the same layout as ClusterPipeline's, so a built one can become this

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        started = time.perf_counter()
        try:
            return await super().execute(raise_on_error, allow_redirections)
        finally:
            _PIPELINE(time.perf_counter() - started)


class TimedRedisCluster(RedisCluster):
    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        return await _timed(super().execute_command, args, kwargs)

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        # as TimedRedis.pipeline: redis-py's own checks (a transaction is refused before
        # redis-py 6), then timed
        pipe = super().pipeline(transaction, shard_hint)
        # mypy counts ClusterPipeline abstract (an abstract base's stubs); it is concrete
        pipe.__class__ = TimedClusterPipeline  # type: ignore[type-abstract]
        return pipe
