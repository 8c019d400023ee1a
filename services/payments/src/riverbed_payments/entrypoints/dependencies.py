"""What the routes need from the running service, as FastAPI dependencies: one per
resource, each answering 503 (``starting``, with Retry-After) while the service is not
serving (starting, or stopping)."""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Depends, Request

from riverbed.service import container_of
from riverbed_payments.adapters.ledger import SqlLedger
from riverbed_payments.adapters.reconciliation_jobs import ReconciliationJobs
from riverbed_payments.adapters.reports import SqlReports
from riverbed_payments.service_layer.reconciliation import Reconciler


class Serving(Protocol):
    """What the routes use of the service's container (``bootstrap.Container``)."""

    ledger: SqlLedger
    reports: SqlReports
    reconciler: Reconciler
    jobs: ReconciliationJobs


def _container(request: Request) -> Serving:
    """The service's container; a 503 ``starting`` problem while it starts or stops."""
    serving: Serving = container_of(request)
    return serving


def ledger(request: Request) -> SqlLedger:
    """The ledger's reads (balances, transactions, failures)."""
    return _container(request).ledger


def reports(request: Request) -> SqlReports:
    """Settlement reports, their lines and payouts."""
    return _container(request).reports


def reconciler(request: Request) -> Reconciler:
    """Receives settlement reports."""
    return _container(request).reconciler


def jobs(request: Request) -> ReconciliationJobs:
    """Matches received reports in the background."""
    return _container(request).jobs


LedgerReads = Annotated[SqlLedger, Depends(ledger)]
Reports = Annotated[SqlReports, Depends(reports)]
ReportReceiver = Annotated[Reconciler, Depends(reconciler)]
Jobs = Annotated[ReconciliationJobs, Depends(jobs)]
