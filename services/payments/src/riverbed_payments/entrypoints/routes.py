"""The payments API: the ledger (read-only) and settlement reconciliation.

The routes reach the running service through ``entrypoints/dependencies.py``. Every route
needs ``Authorization: Bearer <PAYMENTS_API_KEY>``, an admin key of its own
(never the gateway's ingestion key): the ledger is financial data. Nothing here writes to
the ledger; events do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response, Security, status
from fastapi.security import HTTPBearer

from riverbed.problems import bearer_key_check, found_or_404
from riverbed_payments.adapters.reports import SqlReports
from riverbed_payments.entrypoints.dependencies import Jobs, LedgerReads, ReportReceiver, Reports
from riverbed_payments.entrypoints.problems import Problem, problem_responses
from riverbed_payments.entrypoints.schemas import (
    AfterLine,
    BalanceList,
    BalanceOut,
    FailureOut,
    LineList,
    LineOut,
    PaymentOut,
    PayoutList,
    PayoutOut,
    ReportList,
    ReportOut,
    TransactionList,
    TransactionOut,
)

#: content types a settlement report may be sent as
CSV_TYPES = ("text/csv", "application/csv", "text/plain", "application/octet-stream")
LineClassParam = Literal["matched", "missing_in_ledger", "missing_at_provider", "amount_mismatch"]
Provider = Annotated[str, Query(min_length=1, max_length=50, pattern=r"^[a-z][a-z0-9_-]*$")]


#: path parameters, as long as the columns that hold them (longer: 422, not a lookup)
TransactionId = Annotated[str, Path(min_length=1, max_length=36, description="a UUID")]
ProviderName = Annotated[str, Path(min_length=1, max_length=50)]
ProviderPaymentId = Annotated[str, Path(min_length=1, max_length=255)]
ReportId = Annotated[str, Path(min_length=1, max_length=40)]
#: a route with path parameters also answers 404 (unknown id, or no route at the path)
FOUND = problem_responses(404)
#: documents the scheme; authorized() below decides (this one refuses nothing itself)
BEARER = HTTPBearer(auto_error=False, description="PAYMENTS_API_KEY, the admin key")
#: the body of POST /v1/reconciliations, read as a stream (not parsed by FastAPI)
REPORT_BODY = {
    "requestBody": {
        "required": True,
        "description": "the settlement report: CSV with a header line (the README gives the "
        "columns); read as it arrives",
        "content": {media: {"schema": {"type": "string", "minLength": 1}} for media in CSV_TYPES},
    }
}


#: the /v1 routes, without their prefix and key check (see :func:`router`)
routes = APIRouter()


# -- the ledger -------------------------------------------------------------------------


@routes.get("/balances", summary="Balances per account and currency, derived from postings")
async def balances(
    ledger: LedgerReads,
    account: Annotated[str | None, Query(max_length=200)] = None,
    currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None,
) -> BalanceList:
    found = await ledger.balances(account=account, currency=currency)
    return BalanceList(data=[BalanceOut.of(b) for b in found])


@routes.get("/transactions", summary="Ledger transactions with their postings (by id, paged)")
async def list_transactions(
    ledger: LedgerReads,
    provider: Annotated[str | None, Query(max_length=50)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[str | None, Query(max_length=36)] = None,
) -> TransactionList:
    page = await ledger.page(limit=limit, provider=provider, after=after)
    return TransactionList(
        data=[TransactionOut.of(t) for t in page],
        next_after=page[-1].id if len(page) == limit else None,
    )


@routes.get("/transactions/{transaction_id}", summary="One ledger transaction", responses=FOUND)
async def get_transaction(transaction_id: TransactionId, ledger: LedgerReads) -> TransactionOut:
    transaction = await ledger.transaction(transaction_id)
    return TransactionOut.of(
        found_or_404(transaction, "Unknown transaction", f"no transaction {transaction_id}")
    )


@routes.get(
    "/payments/{provider}/{provider_payment_id}",
    summary="A payment: its transactions (payment, refunds, disputes) and failed attempts",
    responses=FOUND,
)
async def get_payment(
    provider: ProviderName, provider_payment_id: ProviderPaymentId, ledger: LedgerReads
) -> PaymentOut:
    found = await ledger.for_payment(provider, provider_payment_id)
    failures = await ledger.failures(provider, provider_payment_id)
    if not found and not failures:
        raise Problem(
            404,
            "not-found",
            "Unknown payment",
            f"no payment {provider_payment_id} of {provider} in the ledger",
        )
    return PaymentOut(
        provider=provider,
        provider_payment_id=provider_payment_id,
        status="recorded" if found else "failed",
        transactions=[TransactionOut.of(t) for t in found],
        failures=[FailureOut.model_validate(f) for f in failures],
    )


# -- reconciliation ---------------------------------------------------------------------


@routes.post(
    "/reconciliations",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Submit a settlement report (CSV, streamed); it is matched in the background",
    responses=problem_responses(413, 415),
    openapi_extra=REPORT_BODY,
)
async def submit_report(
    request: Request,
    response: Response,
    reconciler: ReportReceiver,
    jobs: Jobs,
    reports: Reports,
    provider: Provider,
    filename: Annotated[str | None, Query(max_length=255)] = None,
    period_start: datetime | None = None,
    period_end: datetime | None = None,
) -> ReportOut:
    """The body is the CSV itself (README: the layout); it is read as it arrives."""
    content_type = request.headers.get("content-type", "text/csv").split(";")[0].strip()
    if content_type not in CSV_TYPES:
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"send the report as text/csv, not {content_type}",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > reconciler.max_bytes:
        raise Problem(
            413,
            "too-large",
            "Report too large",
            f"the report is larger than {reconciler.max_bytes} bytes",
        )
    for name, value in (("period_start", period_start), ("period_end", period_end)):
        if value is not None and value.tzinfo is None:
            raise Problem(422, "invalid-request", "Invalid request",
                          f"{name} needs a time zone offset (e.g. Z)")  # fmt: skip

    async def body() -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            yield chunk

    report_id = await reconciler.receive(
        provider, body(), filename=filename, period=(period_start, period_end)
    )
    jobs.start(report_id)
    report = await reports.get(report_id)
    assert report is not None
    response.headers["Location"] = f"/v1/reconciliations/{report_id}"
    return ReportOut.of(report)


@routes.get("/reconciliations", summary="Reports, newest first")
async def list_reports(
    reports: Reports,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[str | None, Query(max_length=40)] = None,
) -> ReportList:
    page = await reports.page(limit=limit, before=before)
    return ReportList(
        data=[ReportOut.of(r) for r in page],
        next_before=page[-1]["id"] if len(page) == limit else None,
    )


async def _report(reports: SqlReports, report_id: str) -> dict[str, Any]:
    """The report ``report_id``, or 404."""
    return found_or_404(
        await reports.get(report_id), "Unknown report", f"no reconciliation {report_id}"
    )


@routes.get(
    "/reconciliations/{report_id}",
    summary="One report: status and counts per class",
    responses=FOUND,
)
async def get_report(report_id: ReportId, reports: Reports) -> ReportOut:
    return ReportOut.of(await _report(reports, report_id))


@routes.get(
    "/reconciliations/{report_id}/lines",
    summary="A report's lines, by class (paged)",
    responses=FOUND,
)
async def report_lines(
    report_id: ReportId,
    reports: Reports,
    line_class: Annotated[LineClassParam | None, Query(alias="class")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: AfterLine = None,
) -> LineList:
    await _report(reports, report_id)
    rows = await reports.lines(report_id, limit=limit, after=after, line_class=line_class)
    return LineList(
        data=[LineOut.of(r) for r in rows],
        next_after=int(rows[-1]["seq"]) if len(rows) == limit else None,
    )


@routes.get(
    "/reconciliations/{report_id}/payouts",
    summary="A report's payouts, checked",
    responses=FOUND,
)
async def report_payouts(report_id: ReportId, reports: Reports) -> PayoutList:
    await _report(reports, report_id)
    rows = await reports.payouts(report_id)
    return PayoutList(data=[PayoutOut.model_validate(r) for r in rows])


def router(api_key: str | None) -> APIRouter:
    """The /v1 routes behind ``api_key`` (PAYMENTS_API_KEY; None: every route answers 503)."""
    authorized = bearer_key_check(api_key, setting="PAYMENTS_API_KEY")
    api = APIRouter(
        prefix="/v1",
        tags=["payments"],
        dependencies=[Security(BEARER), Depends(authorized)],
        # every route: the key, validation (each has parameters), availability
        responses=problem_responses(401, 422, 503),
    )
    api.include_router(routes)
    return api
