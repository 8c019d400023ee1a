"""Reconciliation jobs running in this process: background tasks, each holding a Redis
lease on its report so that one replica at a time matches it.

A report whose lease another replica holds is left to it; one whose holder crashed is
taken over by the next sweep (:meth:`ReconciliationJobs.resume_unfinished`) once the
lease has lapsed.
"""

from __future__ import annotations

import asyncio

import structlog

from riverbed.connection import Redis
from riverbed.lease import LeaseLost, run_exclusively
from riverbed_payments import keys
from riverbed_payments.adapters.reports import SqlReports
from riverbed_payments.service_layer.reconciliation import Reconciler

log = structlog.get_logger(__name__)


class ReconciliationJobs:
    """``lease_s``: how long a job holds its report without renewing (it renews while it
    works), s."""

    def __init__(
        self, reconciler: Reconciler, reports: SqlReports, redis: Redis, *, lease_s: float
    ) -> None:
        self.reconciler = reconciler
        self.reports = reports
        self.redis = redis
        self.lease_ms = int(lease_s * 1000)
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, report_id: str) -> None:
        """Match ``report_id`` in the background, unless this process already does."""
        if report_id in self.tasks:
            return
        task = asyncio.create_task(self._run(report_id), name=f"reconcile:{report_id}")
        self.tasks[report_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(report_id, None))

    async def resume_unfinished(self) -> None:
        """Start a job for every report still being matched (a crashed replica's, or one
        left by a restart); the lease decides which replica runs it. The service runs
        this at start-up and every ``PAYMENTS_RECONCILIATION_SWEEP_S``."""
        for report_id in await self.reports.in_status("processing"):
            if report_id not in self.tasks:
                log.info("resuming reconciliation", report_id=report_id)
                self.start(report_id)

    async def _run(self, report_id: str) -> None:
        try:
            ran = await run_exclusively(
                self.redis,
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
        """Cancel the jobs of this process and wait until each has ended; their reports
        stay ``processing`` and are resumed by the next sweep (here or in a replica)."""
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
