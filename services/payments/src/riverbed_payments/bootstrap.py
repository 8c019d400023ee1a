"""The composition root: settings in, a ready-to-run payments service out.

Nothing is opened at import or construction time. ``start()`` opens the database
(migrating it unless ``PAYMENTS_MIGRATE_ON_START=false``), then Redis and the
consumers (the runtime's ``Service.start``), wires the use cases, starts the outbox
relay and resumes any reconciliation a previous process left half done. ``stop()``
drains the consumers first, then stops the relay and the jobs and closes the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from riverbed.connection import Redis
from riverbed.consumer import Message
from riverbed.lease import LeaseLost, run_exclusively
from riverbed.outbox import OutboxRelay
from riverbed.publisher import Publisher
from riverbed.service import Service, cancel_tasks, every
from riverbed.settings import ConsumerSettings, RedisSettings
from riverbed.sql import prepare_database
from riverbed_payments import keys
from riverbed_payments.adapters import migrate
from riverbed_payments.adapters.reports import SqlReports
from riverbed_payments.adapters.sql import READ_ONLY, SqlLedger, create_engine
from riverbed_payments.adapters.tables import outbox
from riverbed_payments.entrypoints import api, problems
from riverbed_payments.service_layer.reconciliation import Reconciler
from riverbed_payments.service_layer.recording import Recorder
from riverbed_payments.settings import INBOUND_STREAMS, PaymentsSettings

log = structlog.get_logger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Container:
    """Every wired dependency of a started service (what handlers and routes use)."""

    engine: AsyncEngine
    ledger: SqlLedger
    reports: SqlReports
    recorder: Recorder
    reconciler: Reconciler
    relay: OutboxRelay
    jobs: Jobs


class Jobs:
    """Reconciliation jobs running in this process (background tasks, cancelled at stop).

    Each report is matched by one replica at a time: the job holds a lease in Redis,
    renewed while it works. A report whose lease another replica holds is left to it; one
    whose holder crashed is taken over by the next sweep once the lease has lapsed.
    """

    def __init__(
        self, reconciler: Reconciler, redis: Callable[[], Redis], *, lease_s: float
    ) -> None:
        self.reconciler = reconciler
        self.redis = redis
        self.lease_ms = int(lease_s * 1000)
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, report_id: str) -> None:
        if report_id in self.tasks:
            return
        task = asyncio.create_task(self._run(report_id), name=f"reconcile:{report_id}")
        self.tasks[report_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(report_id, None))

    async def _run(self, report_id: str) -> None:
        try:
            ran = await run_exclusively(
                self.redis(),
                keys.reconciliation_lease_key(report_id),
                lambda: self.reconciler.run(report_id),
                ttl_ms=self.lease_ms,
            )
        except LeaseLost:
            log.warning("reconciliation handed over: its lease was lost", report_id=report_id)
        except Exception as error:  # run() logs, counts and stores its own failures
            log.debug("reconciliation ended with an error", report_id=report_id, error=str(error))
        else:
            if not ran:
                log.debug("reconciliation runs in another replica", report_id=report_id)

    async def stop(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


class PaymentsService(Service):
    """The runtime's :class:`Service` plus the ledger database, the outbox relay and the API."""

    def __init__(
        self,
        settings: PaymentsSettings,
        *,
        redis_settings: RedisSettings | None = None,
        consumer_settings: ConsumerSettings | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        app = FastAPI(
            title="Riverbed payments",
            version="1",
            description="A double-entry ledger of payment events, and settlement reconciliation.",
            # /v1/balances/ is a 404, not a redirect to /v1/balances: every status the API
            # gives is one its document declares
            redirect_slashes=False,
        )
        super().__init__(
            settings, redis_settings=redis_settings, consumer_settings=consumer_settings, app=app
        )
        self.payments = settings
        self.container: Container | None = None
        self._clock = clock
        self._wired = asyncio.Event()
        self._relay_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        for stream in INBOUND_STREAMS:
            self.subscribe(settings.stream(stream), self._handle)
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        app.state.payments_context = lambda: self.container
        app.include_router(api.router(api_key, settings))
        problems.install(app)

    @property
    def group(self) -> str:
        """The consumer group of every subscription (the processed-messages key's first half)."""
        return self.settings.service_name

    async def _handle(self, message: Message[Any]) -> None:
        await self._wired.wait()  # consumers start a moment before the wiring is done
        assert self.container is not None
        await self.container.recorder(message)

    async def start(self) -> None:
        settings = self.payments
        engine = create_engine(
            settings.database_url.get_secret_value(), schema=settings.database_schema
        )
        try:
            await self._prepare_database(engine)
            await super().start()
        except BaseException:
            await engine.dispose()
            raise
        self.container = self._wire(engine)
        self._wired.set()
        self._relay_task = asyncio.create_task(self.container.relay.run(), name="outbox-relay")
        self.on_drained(self.container.relay.flush)  # the last handlers' events go out too
        self._sweep_task = asyncio.create_task(
            every(
                settings.reconciliation_sweep_s,
                self._sweep_reconciliations,
                failing="could not look for unfinished reports",
            ),
            name="reconciliation-sweep",
        )
        log.info(
            "payments wired",
            streams=[settings.stream(s) for s in INBOUND_STREAMS],
            group=self.group,
        )

    async def stop(self) -> None:
        await super().stop()  # stop reading and drain in-flight handlers first
        await cancel_tasks(self._relay_task, self._sweep_task)
        self._relay_task = self._sweep_task = None
        if self.container is not None:
            await self.container.jobs.stop()
            await self.container.engine.dispose()
            self.container = None
        self._wired.clear()

    async def _sweep_reconciliations(self) -> None:
        """Start a job for every report still being matched (a crashed replica's, or one
        left by a restart); the lease decides which replica runs it. Runs at start-up and
        every ``reconciliation_sweep_s``."""
        container = self.container
        if container is None:
            return
        for report_id in await container.reports.in_status("processing"):
            if report_id not in container.jobs.tasks:
                log.info("resuming reconciliation", report_id=report_id)
                container.jobs.start(report_id)

    async def _prepare_database(self, engine: AsyncEngine) -> None:
        await prepare_database(
            engine, migrate.MIGRATIONS, migrate_on_start=self.payments.migrate_on_start
        )

    def _wire(self, engine: AsyncEngine) -> Container:
        """Build the use cases on the open resources (no I/O here)."""
        settings = self.payments
        publisher = Publisher(self.redis)
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
            # samples are reads: SQLite must not take the write lock for them
            reader=engine.execution_options(**{READ_ONLY: True}),
        )
        ledger = SqlLedger(engine)
        reports = SqlReports(engine)
        recorder = Recorder(
            ledger,
            group=self.group,
            stream_for=settings.stream,
            clock=self._clock,
            receipts=settings.receipts,
            out_of_order_retry_ms=settings.out_of_order_retry_ms,
            out_of_order_max_wait_s=settings.out_of_order_max_wait_s,
            on_commit=relay.notify,
        )
        reconciler = Reconciler(
            reports,
            stream_for=settings.stream,
            clock=self._clock,
            chunk_lines=settings.report_chunk_lines,
            max_bytes=settings.report_max_bytes,
            max_record_chars=settings.report_max_record_chars,
            on_commit=relay.notify,
        )
        return Container(
            engine=engine,
            ledger=ledger,
            reports=reports,
            recorder=recorder,
            reconciler=reconciler,
            relay=relay,
            jobs=Jobs(reconciler, lambda: self.redis, lease_s=settings.reconciliation_lease_s),
        )


def create_service(
    settings: PaymentsSettings,
    *,
    redis_settings: RedisSettings | None = None,
    consumer_settings: ConsumerSettings | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> PaymentsService:
    """The payments service for ``settings``; call ``run()`` (or ``start()``/``stop()``)."""
    return PaymentsService(
        settings,
        redis_settings=redis_settings,
        consumer_settings=consumer_settings,
        clock=clock,
    )
