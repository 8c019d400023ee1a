"""The composition root: settings in, a ready-to-run webhooks service out.

Nothing is opened at import or construction time. ``start()`` opens, in order:
the database (migrating it unless ``WEBHOOKS_MIGRATE_ON_START=false``), the HTTP
client, then Redis and the consumers (the runtime's ``Service.start``), wires
the use cases to them and starts the outbox relay. ``stop()`` drains the consumers
first, then stops the relay and closes the rest. The wiring is the only place that
knows which adapter serves which port.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiohttp.abc import AbstractResolver
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from riverbed.cache import Cache
from riverbed.consumer import Message
from riverbed.errors import PermanentError
from riverbed.outbox import OutboxRelay
from riverbed.service import Service, cancel_tasks, every
from riverbed.settings import ConsumerSettings, RedisSettings
from riverbed.sql import prepare_database
from riverbed_contracts import CloudEvent, DeliverWebhook
from riverbed_contracts.registry import get_spec
from riverbed_webhooks import metrics
from riverbed_webhooks.adapters import migrate
from riverbed_webhooks.adapters.concurrency import LocalConcurrencyGate
from riverbed_webhooks.adapters.delivery_log import SqlDeliveryLog
from riverbed_webhooks.adapters.endpoint_cache import CachedEndpoints
from riverbed_webhooks.adapters.endpoint_repository import SqlEndpointRepository
from riverbed_webhooks.adapters.http_sender import AiohttpSender
from riverbed_webhooks.adapters.ratelimit import RedisRateLimiter
from riverbed_webhooks.adapters.routing import RoutingPublisher
from riverbed_webhooks.adapters.sql import create_engine
from riverbed_webhooks.adapters.tables import outbox
from riverbed_webhooks.entrypoints import api, problems
from riverbed_webhooks.service_layer.delivery import Deliverer, DeliveryPolicy
from riverbed_webhooks.service_layer.endpoints import EndpointManager
from riverbed_webhooks.service_layer.fanout import fan_out
from riverbed_webhooks.service_layer.ports import Clock
from riverbed_webhooks.service_layer.replay import Replayer
from riverbed_webhooks.settings import WebhooksSettings

log = structlog.get_logger(__name__)

DELIVERY_STREAM = get_spec("webhook.delivery.requested.v1").stream


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Container:
    """Every wired dependency of a started service (what handlers and routes use)."""

    engine: AsyncEngine
    repository: SqlEndpointRepository
    delivery_log: SqlDeliveryLog
    sender: AiohttpSender
    cache: CachedEndpoints
    publisher: RoutingPublisher
    relay: OutboxRelay
    manager: EndpointManager
    replayer: Replayer
    deliverer: Deliverer
    clock: Clock


class WebhooksService(Service):
    """The runtime's :class:`Service` plus the webhooks database, HTTP client and API."""

    def __init__(
        self,
        settings: WebhooksSettings,
        *,
        redis_settings: RedisSettings | None = None,
        consumer_settings: ConsumerSettings | None = None,
        resolver: AbstractResolver | None = None,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        app = FastAPI(
            title="Riverbed webhooks",
            version="1",
            description="Signed, retried, per-endpoint-isolated delivery of events to "
            "subscriber endpoints (Standard Webhooks).",
            # /v1/endpoints/ is a 404, not a redirect to /v1/endpoints (where another method
            # may answer): every status the API gives is one its document declares
            redirect_slashes=False,
        )
        # attempts are bounded by the retry schedule; the runtime's delivery count also
        # counts deferrals (rate limit, concurrency cap), so its backstop sits far above
        consumer_settings = (consumer_settings or ConsumerSettings()).model_copy(
            update={"max_deliveries": settings.max_deliveries}
        )
        super().__init__(
            settings, redis_settings=redis_settings, consumer_settings=consumer_settings, app=app
        )
        self.webhooks = settings
        self.container: Container | None = None
        self._resolver = resolver
        self._clock = clock
        self._rng = rng or random.Random()
        self._wired = asyncio.Event()
        self._gauges: asyncio.Task[None] | None = None
        self._pruning: asyncio.Task[None] | None = None
        self._relay: asyncio.Task[None] | None = None
        for stream in settings.source_streams:
            self.subscribe(stream, self._handle_event)
        self.subscribe(settings.stream(DELIVERY_STREAM), self._handle_task)
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        app.state.webhooks_context = lambda: self.container
        app.include_router(api.router(api_key))
        problems.install(app)

    # -- handlers: thin, they decode and call the use cases --------------------------------

    async def _ready(self) -> Container:
        await self._wired.wait()  # consumers start a moment before the wiring is done
        assert self.container is not None
        return self.container

    async def _handle_event(self, message: Message[Any]) -> list[CloudEvent]:
        # the tasks are returned: the runtime appends them before acknowledging the source
        # entry, and their ids are derived from (event, endpoint), so a repeat is dropped
        container = await self._ready()
        return await fan_out(message.event, container.cache)

    async def _handle_task(self, message: Message[Any]) -> None:
        container = await self._ready()
        if not isinstance(message.payload, DeliverWebhook):
            raise PermanentError(f"not a delivery task: {message.event.type}")
        # nothing is returned: the outcome's events are in the outbox, committed with it
        await container.deliverer.deliver(
            message.payload,
            task_id=message.event.id,
            cause=message.event,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.webhooks
        engine = create_engine(
            settings.database_url.get_secret_value(), schema=settings.database_schema
        )
        sender = AiohttpSender(
            settings.address_policy,
            timeout_s=settings.request_timeout_s,
            max_response_bytes=settings.max_response_bytes,
            resolver=self._resolver,
        )
        try:
            await self._prepare_database(engine)
            await sender.start()
            await super().start()
        except BaseException:
            await sender.close()
            await engine.dispose()
            raise
        self.container = self._wire(engine, sender)
        # events the handlers return are published by the consumers' publisher: route them too
        for consumer in self.consumers:
            consumer.publisher = self.container.publisher
        self._wired.set()
        self._relay = asyncio.create_task(self.container.relay.run(), name="outbox-relay")
        self.on_drained(self.container.relay.flush)  # the last handlers' outcomes go out too
        self._gauges = asyncio.create_task(
            every(
                settings.gauge_refresh_s,
                self._refresh_gauges,
                failing="could not sample the endpoint gauges",
            ),
            name="webhooks-gauges",
        )
        if settings.log_retention_days > 0:
            self._pruning = asyncio.create_task(
                every(
                    settings.log_prune_interval_s,
                    self._prune_log,
                    failing="could not prune the delivery log",
                ),
                name="webhooks-log-pruning",
            )
        log.info(
            "webhooks wired",
            source_streams=settings.source_streams,
            delivery_stream=settings.stream(DELIVERY_STREAM),
            allowed_networks=settings.allowed_networks,
        )

    async def stop(self) -> None:
        # stop reading, drain in-flight deliveries, then flush the outbox (on_drained): what
        # a flush cannot append (Redis away) waits for another replica or the next start
        await super().stop()
        await cancel_tasks(self._relay, self._gauges, self._pruning)
        self._relay = self._gauges = self._pruning = None
        if self.container is not None:
            await self.container.sender.close()
            await self.container.engine.dispose()
            self.container = None
        self._wired.clear()

    async def _prepare_database(self, engine: AsyncEngine) -> None:
        await prepare_database(
            engine, migrate.MIGRATIONS, migrate_on_start=self.webhooks.migrate_on_start
        )

    def _wire(self, engine: AsyncEngine, sender: AiohttpSender) -> Container:
        """Build the use cases on the open resources (no I/O here)."""
        settings = self.webhooks
        publisher = RoutingPublisher(self.redis, settings.stream_routes)
        relay = OutboxRelay(
            engine,
            outbox,
            lambda: publisher,
            service=settings.service_name,
            clock=self._clock,
            batch_size=settings.outbox_batch_size,
            poll_interval_s=settings.outbox_poll_interval_s,
            retention=timedelta(seconds=settings.outbox_retention_s),
            max_backoff_s=settings.outbox_max_backoff_s,
        )
        # outcome events are queued with the records they report; a commit wakes the relay
        repository = SqlEndpointRepository(
            engine, stream_for=publisher.stream_for, on_commit=relay.notify
        )
        delivery_log = SqlDeliveryLog(
            engine, stream_for=publisher.stream_for, on_commit=relay.notify
        )
        cache = CachedEndpoints(
            Cache(self.cache_redis),
            repository,
            namespace=settings.cache_namespace,
            ttl=timedelta(seconds=settings.cache_ttl_s),
        )
        manager = EndpointManager(
            repository=repository,
            cache=cache,
            policy=settings.address_policy,
            clock=self._clock,
            rotation_grace=settings.rotation_grace,
        )
        deliverer = Deliverer(
            cache=cache,
            repository=repository,
            log=delivery_log,
            sender=sender,
            limiter=RedisRateLimiter(self.redis),
            gate=LocalConcurrencyGate(),
            clock=self._clock,
            policy=DeliveryPolicy(
                schedule=settings.retry_schedule,
                retry_after_cap_ms=settings.retry_after_max_ms,
                disable_after=settings.disable_after,
                default_concurrency=settings.endpoint_concurrency,
                deferral_base_ms=settings.deferral_base_ms,
                deferral_max_ms=settings.deferral_max_ms,
            ),
            rng=self._rng,
        )
        replayer = Replayer(repository, delivery_log, publisher, self._clock)
        return Container(
            engine=engine,
            repository=repository,
            delivery_log=delivery_log,
            sender=sender,
            cache=cache,
            publisher=publisher,
            relay=relay,
            manager=manager,
            replayer=replayer,
            deliverer=deliverer,
            clock=self._clock,
        )

    async def _prune_log(self) -> None:
        """Delete finished deliveries older than the retention, a batch per transaction, so
        the log (which keeps every body for replays) does not grow without bound. Runs
        every ``log_prune_interval_s``; replicas may prune at once: harmless."""
        container = self.container
        if container is None:
            return
        batch = self.webhooks.log_prune_batch
        cutoff = container.clock() - timedelta(days=self.webhooks.log_retention_days)
        deleted, pruned = batch, 0
        while deleted == batch:  # a short batch means nothing older is left
            deleted = await container.delivery_log.prune(cutoff, limit=batch)
            pruned += deleted
            metrics.LOG_PRUNED.inc(deleted)
        if pruned:
            log.info("delivery log pruned", deliveries=pruned, finished_before=cutoff)

    async def _refresh_gauges(self) -> None:
        """Sample database-backed gauges (disabled endpoints); every ``gauge_refresh_s``."""
        if self.container is not None:
            metrics.DISABLED_ENDPOINTS.set(await self.container.repository.count_disabled())


def create_service(
    settings: WebhooksSettings,
    *,
    redis_settings: RedisSettings | None = None,
    consumer_settings: ConsumerSettings | None = None,
    resolver: AbstractResolver | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> WebhooksService:
    """The webhooks service for ``settings``; call ``run()`` (or ``start()``/``stop()``)."""
    return WebhooksService(
        settings,
        redis_settings=redis_settings,
        consumer_settings=consumer_settings,
        resolver=resolver,
        clock=clock,
    )
