"""The composition root: settings in, a ready-to-run payments service out.

Nothing is opened at import or construction time. When the service starts, the runtime
opens Redis, then :func:`lifespan` opens the database (migrating it unless
``PAYMENTS_MIGRATE_ON_START=false``) and wires the use cases; only then do the
consumers, the outbox relay and the reconciliation sweep (which resumes any report a
previous process left half done) start. At shutdown they stop and the consumers drain
first; then the lifespan relays what the last handlers queued, stops the reconciliation
jobs and closes the database, and the runtime closes Redis.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from riverbed.consumer import Handler
from riverbed.lifespan import Resources
from riverbed.outbox import OutboxRelay, outbox_relay
from riverbed.service import Service
from riverbed.settings import ConsumerSettings, RedisSettings
from riverbed.sql import prepared_database, read_only
from riverbed_payments.adapters.database import create_engine
from riverbed_payments.adapters.ledger import SqlLedger
from riverbed_payments.adapters.migrate import MIGRATIONS
from riverbed_payments.adapters.reconciliation_jobs import ReconciliationJobs
from riverbed_payments.adapters.reports import SqlReports
from riverbed_payments.adapters.tables import outbox
from riverbed_payments.entrypoints import handlers, problems, routes
from riverbed_payments.service_layer.ports import Clock
from riverbed_payments.service_layer.reconciliation import Reconciler
from riverbed_payments.service_layer.recording import Recorder
from riverbed_payments.settings import INBOUND_STREAMS, PaymentsSettings

log = structlog.get_logger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Container:
    """Every wired dependency of a started service (what handlers, routes and chores use)."""

    ledger: SqlLedger
    reports: SqlReports
    recorder: Recorder
    reconciler: Reconciler
    relay: OutboxRelay
    jobs: ReconciliationJobs
    payment_events: Handler  # the handler of every inbound payment stream


PaymentsService = Service[PaymentsSettings, Container]


def wire(
    settings: PaymentsSettings, engine: AsyncEngine, resources: Resources, clock: Clock
) -> Container:
    """Build the use cases on the open database and Redis (no I/O here)."""
    relay = outbox_relay(
        settings,
        engine,
        outbox,
        lambda: resources.publisher,
        clock=clock,
        # samples are reads: SQLite must not take the write lock for them
        reader=read_only(engine),
    )
    ledger = SqlLedger(engine)
    reports = SqlReports(engine)
    recorder = Recorder(
        ledger,
        group=settings.service_name,  # the consumer group of every subscription
        stream_for=settings.stream,
        clock=clock,
        receipts=settings.receipts,
        out_of_order_retry_ms=settings.out_of_order_retry_ms,
        out_of_order_max_wait_s=settings.out_of_order_max_wait_s,
        on_commit=relay.notify,
    )
    reconciler = Reconciler(
        reports,
        stream_for=settings.stream,
        clock=clock,
        chunk_lines=settings.report_chunk_lines,
        max_bytes=settings.report_max_bytes,
        max_record_chars=settings.report_max_record_chars,
        on_commit=relay.notify,
    )
    jobs = ReconciliationJobs(
        reconciler, reports, resources.redis, lease_s=settings.reconciliation_lease_s
    )
    return Container(
        ledger=ledger,
        reports=reports,
        recorder=recorder,
        reconciler=reconciler,
        relay=relay,
        jobs=jobs,
        payment_events=handlers.payment_events(recorder),
    )


@asynccontextmanager
async def lifespan(
    settings: PaymentsSettings, resources: Resources, *, clock: Clock = utc_now
) -> AsyncIterator[Container]:
    """The database, prepared, and the wired use cases for as long as the service runs."""
    async with prepared_database(settings, MIGRATIONS, create_engine) as engine:
        container = wire(settings, engine, resources, clock)
        log.info(
            "payments wired",
            streams=[settings.stream(s) for s in INBOUND_STREAMS],
            group=settings.service_name,
        )
        yield container
        # the consumers have drained: the last handlers' events go out with this replica
        try:
            await container.relay.flush()
        finally:
            await container.jobs.stop()


def create_app(settings: PaymentsSettings) -> FastAPI:
    """The HTTP app: the /v1 API (the runtime adds its ops routes) and its problems."""
    app = FastAPI(
        title="Riverbed payments",
        version="1",
        description="A double-entry ledger of payment events, and settlement reconciliation.",
        # /v1/balances/ is a 404, not a redirect to /v1/balances: every status the API
        # gives is one its document declares
        redirect_slashes=False,
    )
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    app.include_router(routes.router(api_key))
    problems.install(app)
    return app


def create_service(
    settings: PaymentsSettings,
    *,
    redis_settings: RedisSettings | None = None,
    consumer_settings: ConsumerSettings | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> PaymentsService:
    """The payments service for ``settings``; call ``run()`` (or ``start()``/``stop()``)."""
    service: PaymentsService = Service(
        settings,
        functools.partial(lifespan, clock=clock),
        redis_settings=redis_settings,
        consumer_settings=consumer_settings,
        app=create_app(settings),
    )
    for stream in INBOUND_STREAMS:
        service.subscribe(settings.stream(stream), handler_of=lambda c: c.payment_events)
    service.in_background(lambda c: c.relay.run(), name="outbox-relay")
    service.every(
        settings.reconciliation_sweep_s,
        lambda c: c.jobs.resume_unfinished(),
        name="reconciliation-sweep",
    )
    return service
