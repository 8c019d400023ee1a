"""The composition root: settings in, a ready-to-run webhooks service out.

Nothing is opened at import or construction time. The :func:`lifespan` opens, on top of
the runtime's Redis, the database (migrating it unless ``WEBHOOKS_MIGRATE_ON_START=false``)
and the HTTP client, and wires the use cases to them; :func:`create_service` subscribes
the handlers and registers the outbox relay and the chores, which the runtime starts only
once the lifespan has yielded. At shutdown the consumers drain first; then the lifespan
flushes the outbox (the last handlers' outcomes go out too) and closes the HTTP client and
the database. This is the only module that knows which adapter serves which port.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from aiohttp.abc import AbstractResolver
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from riverbed.cache import Cache
from riverbed.lifespan import Resources
from riverbed.outbox import OutboxRelay, outbox_relay
from riverbed.service import Service
from riverbed.settings import ConsumerSettings, RedisSettings
from riverbed.sql import prepared_database
from riverbed_contracts.registry import get_spec
from riverbed_webhooks.adapters.concurrency import LocalConcurrencyGate
from riverbed_webhooks.adapters.delivery_log import SqlDeliveryLog
from riverbed_webhooks.adapters.endpoint_cache import CachedEndpoints
from riverbed_webhooks.adapters.endpoint_repository import SqlEndpointRepository
from riverbed_webhooks.adapters.http_sender import AiohttpSender
from riverbed_webhooks.adapters.migrate import MIGRATIONS
from riverbed_webhooks.adapters.ratelimit import RedisRateLimiter
from riverbed_webhooks.adapters.routing import RoutingPublisher
from riverbed_webhooks.adapters.sql import create_engine
from riverbed_webhooks.adapters.tables import outbox
from riverbed_webhooks.domain.addresses import AddressPolicy, parse_networks
from riverbed_webhooks.domain.retry import RetrySchedule
from riverbed_webhooks.entrypoints import problems, routes
from riverbed_webhooks.entrypoints.handlers import delivery_handler, fan_out_handler
from riverbed_webhooks.service_layer.delivery import Deliverer, DeliveryPolicy
from riverbed_webhooks.service_layer.endpoints import EndpointManager
from riverbed_webhooks.service_layer.housekeeping import LogPruner, refresh_gauges
from riverbed_webhooks.service_layer.ports import Clock
from riverbed_webhooks.service_layer.replay import Replayer
from riverbed_webhooks.settings import WebhooksSettings

log = structlog.get_logger(__name__)

DELIVERY_STREAM = get_spec("webhook.delivery.requested.v1").stream


def utc_now() -> datetime:
    return datetime.now(UTC)


def retry_schedule(settings: WebhooksSettings) -> RetrySchedule:
    """The retry schedule ``WEBHOOKS_RETRY_SCHEDULE_MS`` and ``WEBHOOKS_RETRY_JITTER`` give."""
    return RetrySchedule(tuple(settings.retry_schedule_ms), settings.retry_jitter)


def address_policy(settings: WebhooksSettings) -> AddressPolicy:
    """The SSRF guard, letting through ``WEBHOOKS_ALLOWED_NETWORKS``."""
    return AddressPolicy(parse_networks(settings.allowed_networks))


@dataclass
class Container:
    """Every wired dependency of a started service (what handlers, routes and chores use)."""

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
    pruner: LogPruner
    clock: Clock


@dataclass(frozen=True)
class Seams:
    """What tests replace: the sender's DNS resolver, the clock, the retry jitter's source."""

    resolver: AbstractResolver | None = None
    clock: Clock = utc_now
    rng: random.Random | None = None


@contextlib.asynccontextmanager
async def lifespan(
    settings: WebhooksSettings, resources: Resources, seams: Seams = Seams()
) -> AsyncIterator[Container]:
    """The database, then the HTTP client, wired into a :class:`Container`; after the
    drain, the outbox flushed, then the client closed, then the database."""
    sender = AiohttpSender(
        address_policy(settings),
        timeout_s=settings.request_timeout_s,
        max_response_bytes=settings.max_response_bytes,
        resolver=seams.resolver,
    )
    async with prepared_database(settings, MIGRATIONS, create_engine) as engine:
        try:
            await sender.start()
            container = wire(settings, resources, engine, sender, seams)
            log.info(
                "webhooks wired",
                source_streams=settings.source_streams,
                delivery_stream=settings.stream(DELIVERY_STREAM),
                allowed_networks=settings.allowed_networks,
            )
            yield container
            # what a flush cannot append (Redis away) waits for another replica or the next start
            await container.relay.flush()
        finally:
            await sender.close()


def wire(
    settings: WebhooksSettings,
    resources: Resources,
    engine: AsyncEngine,
    sender: AiohttpSender,
    seams: Seams,
) -> Container:
    """Build the use cases on the open resources (no I/O here)."""
    publisher = RoutingPublisher(resources.redis, settings.stream_routes)
    relay = outbox_relay(settings, engine, outbox, lambda: publisher, clock=seams.clock)
    # outcome events are queued with the records they report; a commit wakes the relay
    repository = SqlEndpointRepository(
        engine, stream_for=publisher.stream_for, on_commit=relay.notify
    )
    delivery_log = SqlDeliveryLog(engine, stream_for=publisher.stream_for, on_commit=relay.notify)
    cache = CachedEndpoints(
        Cache(resources.cache_redis),
        repository,
        namespace=settings.cache_namespace,
        ttl=timedelta(seconds=settings.cache_ttl_s),
    )
    return Container(
        engine=engine,
        repository=repository,
        delivery_log=delivery_log,
        sender=sender,
        cache=cache,
        publisher=publisher,
        relay=relay,
        manager=EndpointManager(
            repository=repository,
            cache=cache,
            policy=address_policy(settings),
            clock=seams.clock,
            rotation_grace=settings.rotation_grace,
        ),
        replayer=Replayer(repository, delivery_log, publisher, seams.clock),
        deliverer=deliverer(settings, resources, repository, delivery_log, cache, sender, seams),
        pruner=LogPruner(
            delivery_log,
            seams.clock,
            retention=timedelta(days=settings.log_retention_days),
            batch=settings.log_prune_batch,
        ),
        clock=seams.clock,
    )


def deliverer(
    settings: WebhooksSettings,
    resources: Resources,
    repository: SqlEndpointRepository,
    delivery_log: SqlDeliveryLog,
    cache: CachedEndpoints,
    sender: AiohttpSender,
    seams: Seams,
) -> Deliverer:
    """The delivery use case: the retry and deferral policy from ``settings``."""
    return Deliverer(
        cache=cache,
        repository=repository,
        log=delivery_log,
        sender=sender,
        limiter=RedisRateLimiter(resources.redis),
        gate=LocalConcurrencyGate(),
        clock=seams.clock,
        policy=DeliveryPolicy(
            schedule=retry_schedule(settings),
            retry_after_cap_ms=settings.retry_after_max_ms,
            disable_after=settings.disable_after,
            default_concurrency=settings.endpoint_concurrency,
            deferral_base_ms=settings.deferral_base_ms,
            deferral_max_ms=settings.deferral_max_ms,
        ),
        rng=seams.rng or random.Random(),
    )


def api_app(settings: WebhooksSettings) -> FastAPI:
    """The HTTP app: the /v1 management API behind ``WEBHOOKS_API_KEY``, its problems."""
    app = FastAPI(
        title="Riverbed webhooks",
        version="1",
        description="Signed, retried, per-endpoint-isolated delivery of events to "
        "subscriber endpoints (Standard Webhooks).",
        # /v1/endpoints/ is a 404, not a redirect to /v1/endpoints (where another method
        # may answer): every status the API gives is one its document declares
        redirect_slashes=False,
    )
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    app.include_router(routes.router, dependencies=routes.key_required(api_key))
    problems.install(app)
    return app


def create_service(
    settings: WebhooksSettings,
    *,
    redis_settings: RedisSettings | None = None,
    consumer_settings: ConsumerSettings | None = None,
    resolver: AbstractResolver | None = None,
    clock: Callable[[], datetime] = utc_now,
    rng: random.Random | None = None,
) -> Service[WebhooksSettings, Container]:
    """The webhooks service for ``settings``; call ``run()`` (or ``start()``/``stop()``).

    The keyword arguments are test seams: another Redis, faster consumers, a DNS resolver
    for the sender, a clock, the retry jitter's random source."""
    seams = Seams(resolver=resolver, clock=clock, rng=rng)
    # attempts are bounded by the retry schedule; the runtime's delivery count also
    # counts deferrals (rate limit, concurrency cap), so its backstop sits far above
    consumer_settings = (consumer_settings or ConsumerSettings()).model_copy(
        update={"max_deliveries": settings.max_deliveries}
    )
    service: Service[WebhooksSettings, Container] = Service(
        settings,
        lambda settings, resources: lifespan(settings, resources, seams),
        redis_settings=redis_settings,
        consumer_settings=consumer_settings,
        app=api_app(settings),
        # the events the handlers return (delivery tasks) go through the stream routes too
        outcome_publisher=lambda container: container.publisher,
    )
    for stream in settings.source_streams:
        service.subscribe(stream, handler_of=lambda container: fan_out_handler(container.cache))
    service.subscribe(
        settings.stream(DELIVERY_STREAM),
        handler_of=lambda container: delivery_handler(container.deliverer),
    )
    service.in_background(lambda container: container.relay.run(), name="outbox-relay")
    service.every(
        settings.gauge_refresh_s,
        lambda container: refresh_gauges(container.repository),
        name="webhooks-gauges",
    )
    if settings.log_retention_days > 0:
        service.every(
            settings.log_prune_interval_s,
            lambda container: container.pruner.prune(),
            name="webhooks-log-pruning",
        )
    return service
