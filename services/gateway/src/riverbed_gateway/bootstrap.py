"""The gateway's composition root: settings in, a ready-to-start Service out.

The only module that knows which adapter serves which port: :func:`lifespan` wires the
Redis adapters into the use cases on the runtime's open Redis and yields the
:class:`Container` routes reach through ``entrypoints.dependencies``; :func:`create_service`
checks the configuration (keys, providers) and builds the app.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi.routing import APIRoute

from riverbed.lifespan import Resources
from riverbed.schedules import ScheduleStore
from riverbed.service import Service
from riverbed.settings import RedisSettings
from riverbed.tracing import TracedRequests
from riverbed_gateway.adapters.backpressure import Backpressure
from riverbed_gateway.adapters.delayed_events import RedisDelayedEvents
from riverbed_gateway.adapters.event_streams import RedisEventStreams
from riverbed_gateway.adapters.idempotency_store import IdempotencyStore
from riverbed_gateway.adapters.inbound_dedup import RedisInboundDedup
from riverbed_gateway.adapters.rate_limit import KeyRateLimit
from riverbed_gateway.adapters.redis_key_store import KeyStore
from riverbed_gateway.adapters.replication import replication_of
from riverbed_gateway.domain.api_keys import ConfiguredKeys, configured_keys
from riverbed_gateway.domain.providers import provider_secrets
from riverbed_gateway.entrypoints import (
    contracts_routes,
    event_routes,
    inbound_routes,
    problems,
    scheduled_routes,
    schedules_routes,
)
from riverbed_gateway.entrypoints.middleware import AccessLog, GatewayApp, IngestFastPath
from riverbed_gateway.service_layer.inbound_payments import InboundPayments
from riverbed_gateway.service_layer.ingestion import Ingestion
from riverbed_gateway.service_layer.scheduled_events import ScheduledEvents
from riverbed_gateway.service_layer.schedules_admin import SchedulesAdmin
from riverbed_gateway.settings import GatewaySettings


@dataclass(frozen=True)
class Container:
    """What a started gateway serves with."""

    keys: KeyStore
    backpressure: Backpressure  # reachable by tests and operators' tooling
    ingestion: Ingestion
    inbound_payments: InboundPayments
    scheduled_events: ScheduledEvents
    schedules_admin: SchedulesAdmin


@dataclass(frozen=True)
class CheckedConfiguration:
    """What :func:`create_service` checked, so that a wrong one never starts."""

    keys: ConfiguredKeys
    provider_secrets: dict[str, tuple[bytes, ...]]


@contextlib.asynccontextmanager
async def lifespan(
    settings: GatewaySettings, resources: Resources, checked: CheckedConfiguration
) -> AsyncIterator[Container]:
    """Wire the gateway on the runtime's Redis. Refuses to start
    (:class:`~riverbed_gateway.domain.api_keys.KeyConfigurationError`) when keys in Redis
    clash with configured ones: two keys of one name would be told apart by nobody."""
    redis = resources.redis
    keys = KeyStore(redis, checked.keys, cache_s=settings.key_cache_s)
    await keys.check_stored()
    backpressure = Backpressure(redis, settings)
    streams = RedisEventStreams(
        resources.publisher, replication_of(settings, resources.redis_settings)
    )
    idempotency = IdempotencyStore(
        redis, window_s=settings.idempotency_ttl_s, in_flight_s=settings.in_flight_ttl_s
    )
    dedup = RedisInboundDedup(
        redis, window_s=settings.idempotency_ttl_s, in_flight_s=settings.in_flight_ttl_s
    )
    yield Container(
        keys=keys,
        backpressure=backpressure,
        ingestion=Ingestion(
            settings, keys, idempotency, KeyRateLimit(redis, settings), backpressure, streams
        ),
        inbound_payments=InboundPayments(
            checked.provider_secrets, settings, dedup, streams, backpressure
        ),
        scheduled_events=ScheduledEvents(RedisDelayedEvents(redis), keys),
        schedules_admin=SchedulesAdmin(ScheduleStore(redis)),
    )


def create_service(
    settings: GatewaySettings, *, redis_settings: RedisSettings | None = None
) -> Service[GatewaySettings, Container]:
    """The gateway, ready to start. Raises
    :class:`~riverbed_gateway.domain.api_keys.KeyConfigurationError` for configured keys
    that clash, :class:`~riverbed_gateway.domain.providers.InboundConfigurationError` for a
    provider it cannot serve (start() raises the former for keys in Redis that clash)."""
    checked = CheckedConfiguration(configured_keys(settings), provider_secrets(settings))
    app = GatewayApp(
        title="Riverbed gateway",
        version="1",
        description="Authenticated, validated, idempotent ingestion of events into Redis Streams.",
        # no 307 to the same path with(out) a trailing slash: its Location would be built
        # from the request's Host header; an unknown path is a 404
        redirect_slashes=False,
    )
    service: Service[GatewaySettings, Container] = Service(
        settings,
        lambda settings, resources: lifespan(settings, resources, checked),
        redis_settings=redis_settings,
        app=app,
        run_scheduler=settings.run_scheduler,
    )
    ingest_routes = event_routes.router(settings)
    app.include_router(ingest_routes)
    app.include_router(inbound_routes.router)
    app.include_router(scheduled_routes.router)
    app.include_router(contracts_routes.router)
    app.include_router(schedules_routes.router(settings.admin_api_key))
    respond = problems.install(app)
    documented = {r.path: r for r in ingest_routes.routes if isinstance(r, APIRoute)}
    ingest_routes_by_path = {path: documented[path] for path in IngestFastPath.BATCH_BY_PATH}
    app.add_middleware(IngestFastPath, respond=respond, routes=ingest_routes_by_path)
    app.add_middleware(AccessLog)  # outside the fast path, so it sees that path too
    # the same two, ahead of FastAPI's stack (GatewayApp); behind them, where the fast path
    # passes a request on (never while the gateway runs), the router as in the stack
    app.ingest_first = AccessLog(IngestFastPath(app.router, respond, ingest_routes_by_path))
    # outermost: the request's span is current in everything below, the access log included
    app.add_middleware(TracedRequests)
    return service
