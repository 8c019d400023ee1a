"""The service template every Riverbed service is built on.

A service is its settings plus a *lifespan*: an async context manager that opens the
service's own resources in order (a database, an HTTP client, a second Redis pool, …) on
top of what the runtime opened for it (:class:`Resources`), and yields one typed
*container* holding the wired use cases. :class:`Service` then, and only then, starts the
consumers, the periodic chores and the background tasks, and serves HTTP; on SIGTERM or
SIGINT it cancels the chores, stops reading, drains in-flight work within the configured
timeout, resumes the lifespan (which closes what it opened, in reverse order) and closes
Redis, then exits 0 with a one-line summary.

::

    @asynccontextmanager
    async def lifespan(settings: MySettings, resources: Resources) -> AsyncIterator[Container]:
        async with open_database(settings) as engine:
            yield Container(...)          # consumers and routes run while suspended here
            await relay.flush()           # after the drain, before Redis closes

    service = Service(settings, lifespan)
    service.subscribe(stream, handler_of=lambda container: container.recorder)

Routes reach the container through :func:`container_of` (a FastAPI dependency).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic

import structlog
import uvicorn
from fastapi import FastAPI, Request

from riverbed import eventloop, metrics
from riverbed.background import cancel_tasks, every, logged, retention_loop
from riverbed.backoff import Backoff
from riverbed.connection import Redis, connect, describe, redacted_url
from riverbed.consumer import (
    Handler,
    StreamConsumer,
    Subscription,
    default_consumer_name,
    unused_consumer_name,
)
from riverbed.httpserver import EmbeddedServer, freeze_start_up_objects, head_timeout_protocol
from riverbed.lifespan import ContainerT, Lifespan, Resources, SettingsT, no_resources
from riverbed.logging import configure_logging
from riverbed.monitor import StreamMonitor
from riverbed.ops import ReadinessCheck, ops_router
from riverbed.problems import Problem
from riverbed.publisher import Publisher
from riverbed.redis_config import check_eviction_policy, exit_78_on_unsafe_redis
from riverbed.redis_health import RedisHealth
from riverbed.schedules import Scheduler
from riverbed.settings import (
    ConsumerSettings,
    RedisHealthSettings,
    RedisSettings,
    RetentionSettings,
)
from riverbed.tracing import configure_tracing

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Chore(Generic[ContainerT]):
    name: str
    run: Callable[[ContainerT], Awaitable[object]]
    interval_s: float | None  # None: run once, for as long as it takes (e.g. a relay loop)
    failing: str  # what the log says when a round fails


class Service(Generic[SettingsT, ContainerT]):
    def __init__(
        self,
        settings: SettingsT,
        lifespan: Lifespan[SettingsT, ContainerT] = no_resources,  # type: ignore[assignment]
        *,
        redis_settings: RedisSettings | None = None,
        consumer_settings: ConsumerSettings | None = None,
        app: FastAPI | None = None,
        run_scheduler: bool = False,
        outcome_publisher: Callable[[ContainerT], Publisher] | None = None,
        readiness: tuple[tuple[str, ReadinessCheck], ...] = (),
    ) -> None:
        """``run_scheduler``: also publish recurring schedules' due occurrences
        (:mod:`riverbed.schedules`); safe in any number of replicas.
        ``outcome_publisher``: what appends the events handlers return (default: the
        runtime's publisher), e.g. one that routes event types to other streams.
        ``readiness``: the service's own checks, after the runtime's (Redis, consumers)."""
        self.settings = settings
        self.lifespan = lifespan
        self.run_scheduler = run_scheduler
        self.outcome_publisher = outcome_publisher
        self.redis_settings = redis_settings or RedisSettings()
        self.consumer_settings = consumer_settings or ConsumerSettings()
        self.retention_settings = RetentionSettings()
        self.redis_health = RedisHealth(RedisHealthSettings())  # probes Redis once started
        self.subscriptions: list[Subscription] = []
        # per subscription: what picks its handler from the container (None: given as is)
        self._handlers_of: list[Callable[[ContainerT], Handler] | None] = []
        self.consumers: list[StreamConsumer] = []
        self.monitor: StreamMonitor | None = None
        self.stopped = asyncio.Event()
        self._chores: list[_Chore[ContainerT]] = []
        self._redis: Redis | None = None
        self._cache_redis: Redis | None = None  # REDIS_CACHE_URL, when the cache has its own
        self._container: ContainerT | None = None
        self._started = False
        self._lifespan_exit: contextlib.AsyncExitStack | None = None
        self._stop_requested = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self.app = app or FastAPI(title=f"riverbed {settings.service_name}")
        self.app.state.service = self
        checks = [("redis", self.redis_health.ready), ("consumers", self._consumers_ready)]
        self.app.include_router(ops_router([*checks, *readiness], before_scrape=self._sample))

    # -- wiring ----------------------------------------------------------------------------

    def subscribe(
        self,
        stream: str,
        handler: Handler | None = None,
        *,
        handler_of: Callable[[ContainerT], Handler] | None = None,
        group: str | None = None,
        idempotent: bool = True,
        backoff: Backoff | None = None,
        handler_timeout_s: float | None = None,
    ) -> None:
        """Consume ``stream`` in ``group`` (default: the service name) with ``handler``, or
        with what ``handler_of`` picks from the container once the lifespan has yielded."""
        if (handler is None) == (handler_of is None):
            raise TypeError("subscribe() takes a handler or handler_of, exactly one")
        subscription = Subscription(
            stream=stream,
            group=group or self.settings.service_name,
            handler=handler or _not_started,
            idempotent=idempotent,
            backoff=backoff,
            handler_timeout_s=handler_timeout_s,
        )
        self.subscriptions.append(subscription)
        self._handlers_of.append(handler_of)

    def every(
        self, interval_s: float, chore: Callable[[ContainerT], Awaitable[object]], *, name: str
    ) -> None:
        """Run ``chore(container)`` every ``interval_s`` seconds while the service runs; a
        failing round is logged (``name`` says which chore) and the next comes as planned."""
        self._chores.append(_Chore(name, chore, interval_s, failing=f"{name} failed"))

    def in_background(self, task: Callable[[ContainerT], Awaitable[object]], *, name: str) -> None:
        """Run ``task(container)`` (a loop of its own, e.g. an outbox relay) while the
        service runs; it is cancelled at shutdown before the consumers drain."""
        self._chores.append(_Chore(name, task, None, failing=f"{name} stopped"))

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("the service has not started: Redis is opened by start()")
        return self._redis

    @property
    def cache_redis(self) -> Redis:
        """Where the global cache lives: ``REDIS_CACHE_URL``'s Redis, else :attr:`redis`."""
        return self._cache_redis if self._cache_redis is not None else self.redis

    @property
    def container(self) -> ContainerT:
        """What the lifespan yielded; raises before start() and after stop()."""
        if not self._started:
            raise RuntimeError("the service has not started: its lifespan runs in start()")
        return self._container  # type: ignore[return-value]

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open Redis, run the lifespan up to its yield, then start consumers and chores."""
        resources = await self._open_redis()
        exit_stack = contextlib.AsyncExitStack()
        try:
            self._container = await exit_stack.enter_async_context(
                self.lifespan(self.settings, resources)
            )
        except BaseException:
            await exit_stack.aclose()
            await self._close_redis()
            raise
        self._lifespan_exit = exit_stack
        self._started = True
        await self._start_consumers(resources.publisher)
        self.monitor = StreamMonitor(resources.redis, [s.stream for s in self.subscriptions])
        self._start_chores(self.monitor)

    async def _open_redis(self) -> Resources:
        self._redis = connect(self.redis_settings)
        try:
            await self._redis.ping()
            await check_eviction_policy(self._redis)  # refuses allkeys-*: before any lifespan
        except BaseException:
            await self._close_redis()
            raise
        log.info("connected to Redis", redis=describe(self.redis_settings))
        if self.redis_settings.cache_url is not None:
            # not pinged: the cache is for speed, and a cache Redis that is down only
            # means loading from the source (riverbed.cache), never a failed start
            self._cache_redis = connect(self.redis_settings, cache=True)
            log.info(
                "cache on its own Redis",
                url=redacted_url(self.redis_settings.cache_url.get_secret_value()),
            )
        return Resources(
            redis=self._redis,
            cache_redis=self.cache_redis,
            publisher=Publisher(self._redis),
            redis_settings=self.redis_settings,
        )

    async def _start_consumers(self, publisher: Publisher) -> None:
        if self.outcome_publisher is not None:
            publisher = self.outcome_publisher(self.container)
        name = await unused_consumer_name(
            self.redis,
            self.subscriptions,
            self.settings.consumer_name or default_consumer_name(),
            self.consumer_settings,
        )
        for subscription, handler_of in zip(self.subscriptions, self._handlers_of, strict=True):
            if handler_of is not None:
                subscription = dataclasses.replace(subscription, handler=handler_of(self.container))
            consumer = StreamConsumer(
                self.redis,
                subscription,
                settings=self.consumer_settings,
                consumer_name=name,
                service=self.settings.service_name,
                publisher=publisher,
            )
            consumer.start()
            self.consumers.append(consumer)

    def _start_chores(self, monitor: StreamMonitor) -> None:
        retention = retention_loop(
            monitor, self.retention_settings, self.settings.retention_interval_s
        )
        self._background.append(asyncio.create_task(retention, name="retention"))
        health = self.redis_health.run(self.redis)
        self._background.append(asyncio.create_task(health, name="redis-health"))
        if self.run_scheduler:
            scheduler = Scheduler(self.redis)
            self._background.append(asyncio.create_task(scheduler.run(), name="scheduler"))
        for chore in self._chores:
            work = _bind(chore.run, self.container)
            if chore.interval_s is None:
                runs: Awaitable[object] = work()
            else:
                runs = every(chore.interval_s, work, failing=chore.failing)
            task = logged(runs, failing=chore.failing)
            self._background.append(asyncio.create_task(task, name=chore.name))

    def request_stop(self) -> None:
        """Ask :meth:`serve` to stop, as SIGTERM does."""
        self._stop_requested.set()

    async def stop(self) -> None:
        """Stop chores, drain the consumers, leave the lifespan, close Redis."""
        await cancel_tasks(*self._background)
        self._background.clear()
        for consumer in self.consumers:
            consumer.stop()
        await asyncio.gather(*(consumer.join() for consumer in self.consumers))
        if self._lifespan_exit is not None:
            exit_stack, self._lifespan_exit = self._lifespan_exit, None
            try:
                # the lifespan's own clean-up (e.g. an outbox flush) gets the drain's limit
                await asyncio.wait_for(
                    exit_stack.aclose(), timeout=self.consumer_settings.shutdown_timeout_s
                )
            except Exception as error:
                log.warning("closing the service's resources failed", error=str(error))
        self._started = False
        self._container = None
        await self._close_redis()
        self.stopped.set()

    async def _close_redis(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if self._cache_redis is not None:
            await self._cache_redis.aclose()
            self._cache_redis = None

    async def serve(self) -> None:
        """Start, serve HTTP, and stop cleanly on SIGTERM/SIGINT."""
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        freeze_start_up_objects()
        server = EmbeddedServer(
            uvicorn.Config(
                self.app,
                host=self.settings.host,
                port=self.settings.port,
                log_config=None,  # our structlog setup handles uvicorn's loggers
                access_log=False,
                lifespan="off",
                http=head_timeout_protocol(self.settings.header_timeout_s),
                timeout_keep_alive=self.settings.keep_alive_timeout_s,
            )
        )
        http = asyncio.create_task(server.serve(), name="http")
        log.info(
            "service started",
            service=self.settings.service_name,
            url=f"http://{self.settings.host}:{self.settings.port}",
            subscriptions=[s.stream for s in self.subscriptions],
        )
        waiter = asyncio.create_task(self._stop_requested.wait())
        await asyncio.wait({waiter, http}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("stopping: no new reads; draining in-flight work")
        await self.stop()
        server.should_exit = True
        await asyncio.gather(http, return_exceptions=True)
        log.info(
            "service stopped",
            service=self.settings.service_name,
            uptime_s=round(time.monotonic() - started, 1),
            acknowledged=metrics.acknowledged_total(),
        )

    def run(self) -> None:
        """Entry point for ``main()``: configure logging, serve until a signal."""
        configure_logging(
            self.settings.log_level, self.settings.log_format, service=self.settings.service_name
        )
        configure_tracing(self.settings.service_name)  # off unless OTEL_EXPORTER_OTLP_* is set
        with exit_78_on_unsafe_redis():  # EX_CONFIG: a refused configuration
            eventloop.run(self.serve())

    # -- health ------------------------------------------------------------------------------

    async def _consumers_ready(self) -> tuple[bool, str]:
        down = [f"{c.stream}/{c.group}" for c in self.consumers if not c.healthy]
        if down:
            return False, f"not running: {', '.join(down)}"
        return True, f"{len(self.consumers)} running"

    async def _sample(self) -> None:
        if self.monitor is not None:
            await self.monitor.refresh()


def container_of(request: Request) -> Any:
    """FastAPI dependency: the container of the service serving ``request``. While the
    service starts or stops it raises a 503 ``starting`` problem with ``Retry-After: 1``
    (answered by :func:`riverbed.problems.install`'s handlers). Services wrap it in typed
    dependencies of their own, one per resource a route needs."""
    service: Service[Any, Any] = request.app.state.service
    try:
        return service.container
    except RuntimeError:
        raise Problem(
            503,
            "starting",
            "Service starting",
            "the service is not ready; retry shortly",
            headers={"Retry-After": "1"},
        ) from None


async def _not_started(message: Any) -> None:
    raise RuntimeError("a subscription's handler is picked from the container at start()")


def _bind(
    run: Callable[[ContainerT], Awaitable[object]], container: ContainerT
) -> Callable[[], Awaitable[object]]:
    return lambda: run(container)
