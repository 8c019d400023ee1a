"""Settlement reports and their reconciliation in SQL: lines in, classes and totals out.

Every method is one short transaction over at most one chunk of lines, so a report
of any size is stored and matched in bounded memory. Events the job emits go into
the outbox in the same transaction as the rows they report.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, exists, func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from riverbed_payments.adapters.sql import READ_ONLY, LedgerSession, OutboxMessage, upsert
from riverbed_payments.adapters.tables import (
    postings,
    report_lines,
    report_payouts,
    reports,
    transactions,
)
from riverbed_payments.domain import ledger
from riverbed_payments.domain.ledger import Kind
from riverbed_payments.domain.reconciliation import (
    REPORTED_KINDS,
    LedgerFigures,
    LineClass,
    PayoutTotals,
    ReportLine,
)

_COUNTS = (
    "lines",
    "matched",
    "missing_in_ledger",
    "missing_at_provider",
    "amount_mismatch",
    "payouts",
    "payouts_unbalanced",
)


class SqlReports:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.reader = engine.execution_options(**{READ_ONLY: True})

    # -- receiving -------------------------------------------------------------------------

    async def create(
        self, report_id: str, provider: str, filename: str | None, at: datetime
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(reports).values(
                    id=report_id,
                    provider=provider,
                    status="receiving",
                    filename=filename,
                    created_at=at,
                    **dict.fromkeys(_COUNTS, 0),
                )
            )

    async def add_lines(self, report_id: str, lines: Sequence[ReportLine]) -> None:
        if not lines:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(report_lines),
                [
                    {
                        "report_id": report_id,
                        "line": line.line,
                        "provider_txn_id": line.id,
                        "type": line.type,
                        "kind": line.kind.value,
                        "source": line.source,
                        "amount": line.amount,
                        "fee": line.fee,
                        "net": line.net,
                        "currency": line.currency,
                        "payout_id": line.payout_id,
                        "created": line.created,
                    }
                    for line in lines
                ],
            )

    async def received(
        self,
        report_id: str,
        *,
        lines: int,
        period_start: datetime | None,
        period_end: datetime | None,
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(reports)
                .where(reports.c.id == report_id)
                .values(
                    status="processing",
                    lines=lines,
                    period_start=period_start,
                    period_end=period_end,
                )
            )

    async def fail(self, report_id: str, error: str, at: datetime) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(reports)
                .where(reports.c.id == report_id)
                .values(status="failed", error=error[:2000], completed_at=at)
            )

    # -- matching ----------------------------------------------------------------------------

    async def unclassified(self, report_id: str, limit: int) -> list[Any]:
        query = (
            select(report_lines)
            .where(and_(report_lines.c.report_id == report_id, report_lines.c["class"].is_(None)))
            .order_by(report_lines.c.seq)
            .limit(limit)
        )
        async with self.reader.connect() as conn:
            return list((await conn.execute(query)).all())

    async def ledger_figures(
        self, provider: str, wanted: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], LedgerFigures]:
        """(kind, provider id) -> the ledger's figures for that transaction, where recorded."""
        if not wanted:
            return {}
        query = (
            select(
                transactions.c.id,
                transactions.c.kind,
                transactions.c.provider_ref,
                postings.c.account,
                postings.c.currency,
                func.sum(postings.c.amount),
            )
            .join(postings, postings.c.transaction_id == transactions.c.id)
            .where(
                and_(
                    transactions.c.provider == provider,
                    tuple_(transactions.c.kind, transactions.c.provider_ref).in_(list(wanted)),
                )
            )
            .group_by(
                transactions.c.id,
                transactions.c.kind,
                transactions.c.provider_ref,
                postings.c.account,
                postings.c.currency,
            )
        )
        return _figures(provider, (await self._read(query)))

    async def _read(self, query: Any) -> list[Any]:
        async with self.reader.connect() as conn:
            return list((await conn.execute(query)).all())

    async def classify(
        self,
        updates: Sequence[dict[str, Any]],
        events: Sequence[OutboxMessage],
        at: datetime,
    ) -> None:
        """Write the classes of a chunk of lines and queue their mismatch events, together."""
        async with self.engine.begin() as conn:
            for values in updates:
                seq = values.pop("seq")
                await conn.execute(
                    update(report_lines).where(report_lines.c.seq == seq).values(**values)
                )
            await LedgerSession(conn).add_outbox(events, at=at)

    async def not_in_report(
        self,
        report_id: str,
        provider: str,
        start: datetime,
        end: datetime,
        limit: int,
    ) -> dict[tuple[str, str], LedgerFigures]:
        """Ledger transactions in the period that move the provider balance and that no line of
        the report (nor an earlier pass of this job) accounts for."""
        in_report = exists().where(
            and_(
                report_lines.c.report_id == report_id,
                report_lines.c.kind == transactions.c.kind,
                report_lines.c.source == transactions.c.provider_ref,
            )
        )
        ids = (
            select(transactions.c.id)
            .where(
                and_(
                    transactions.c.provider == provider,
                    transactions.c.kind.in_([k.value for k in REPORTED_KINDS]),
                    transactions.c.occurred_at >= start,
                    transactions.c.occurred_at <= end,
                    ~in_report,
                )
            )
            .order_by(transactions.c.id)
            .limit(limit)
        )
        found = [row[0] for row in await self._read(ids)]
        if not found:
            return {}
        query = (
            select(
                transactions.c.id,
                transactions.c.kind,
                transactions.c.provider_ref,
                postings.c.account,
                postings.c.currency,
                func.sum(postings.c.amount),
            )
            .join(postings, postings.c.transaction_id == transactions.c.id)
            .where(transactions.c.id.in_(found))
            .group_by(
                transactions.c.id,
                transactions.c.kind,
                transactions.c.provider_ref,
                postings.c.account,
                postings.c.currency,
            )
        )
        return _figures(provider, await self._read(query))

    async def add_missing(
        self, rows: Sequence[dict[str, Any]], events: Sequence[OutboxMessage], at: datetime
    ) -> list[int]:
        """Store ledger transactions the report lacks as lines; returns their seqs."""
        seqs = []
        async with self.engine.begin() as conn:
            for row in rows:
                result = await conn.execute(
                    insert(report_lines).values(**row).returning(report_lines.c.seq)
                )
                seqs.append(int(result.scalar_one()))
            await LedgerSession(conn).add_outbox(events, at=at)
        return seqs

    async def payout_totals(self, report_id: str) -> list[PayoutTotals]:
        kind = report_lines.c.kind

        def total(condition: Any, column: Any) -> Any:
            return func.coalesce(func.sum(case((condition, column), else_=0)), 0)

        query = (
            select(
                report_lines.c.payout_id,
                report_lines.c.currency,
                total(kind == Kind.PAYMENT.value, report_lines.c.amount),
                total(kind != Kind.PAYOUT.value, report_lines.c.fee),
                total(kind == Kind.REFUND.value, -report_lines.c.amount),
                total(
                    kind.in_([Kind.DISPUTE.value, Kind.DISPUTE_REVERSAL.value]),
                    -report_lines.c.amount,
                ),
                func.sum(case((kind == Kind.PAYOUT.value, -report_lines.c.amount), else_=None)),
            )
            .where(
                and_(
                    report_lines.c.report_id == report_id,
                    report_lines.c.payout_id.is_not(None),
                    report_lines.c.line.is_not(None),
                )
            )
            .group_by(report_lines.c.payout_id, report_lines.c.currency)
            .order_by(report_lines.c.payout_id, report_lines.c.currency)
        )
        return [
            PayoutTotals(
                payout_id=payout_id,
                currency=currency,
                gross=int(gross),
                fees=int(fees),
                refunds=int(refunds),
                disputes=int(disputes),
                payout_amount=None if paid is None else int(paid),
            )
            for payout_id, currency, gross, fees, refunds, disputes, paid in await self._read(query)
        ]

    async def save_payouts(
        self,
        report_id: str,
        totals: Sequence[PayoutTotals],
        events: Sequence[OutboxMessage],
        at: datetime,
    ) -> None:
        if not totals:
            return
        async with self.engine.begin() as conn:
            statement = upsert(conn.dialect.name, report_payouts).values(
                [
                    {
                        "report_id": report_id,
                        "payout_id": t.payout_id,
                        "currency": t.currency,
                        "gross": t.gross,
                        "fees": t.fees,
                        "refunds": t.refunds,
                        "disputes": t.disputes,
                        "payout_amount": t.payout_amount,
                        "balanced": t.balanced,
                        "detail": None if t.balanced else t.detail(),
                    }
                    for t in totals
                ]
            )
            await conn.execute(statement.on_conflict_do_nothing())
            await LedgerSession(conn).add_outbox(events, at=at)

    async def class_counts(self, report_id: str) -> dict[str, int]:
        query = (
            select(report_lines.c["class"], func.count())
            .where(report_lines.c.report_id == report_id)
            .group_by(report_lines.c["class"])
        )
        counts = {str(c): int(n) for c, n in await self._read(query) if c is not None}
        payouts = select(
            func.count(), func.coalesce(func.sum(case((report_payouts.c.balanced, 0), else_=1)), 0)
        ).where(report_payouts.c.report_id == report_id)
        checked, unbalanced = (await self._read(payouts))[0]
        counts["payouts"], counts["payouts_unbalanced"] = int(checked), int(unbalanced)
        return counts

    async def complete(
        self, report_id: str, counts: dict[str, int], event: OutboxMessage, at: datetime
    ) -> None:
        values = {name: counts.get(name, 0) for name in _COUNTS if name != "lines"}
        async with self.engine.begin() as conn:
            await conn.execute(
                update(reports)
                .where(reports.c.id == report_id)
                .values(status="completed", completed_at=at, **values)
            )
            await LedgerSession(conn).add_outbox([event], at=at)

    # -- reading -------------------------------------------------------------------------------

    async def get(self, report_id: str) -> dict[str, Any] | None:
        rows = await self._read(select(reports).where(reports.c.id == report_id))
        return dict(rows[0]._mapping) if rows else None

    async def page(self, *, limit: int, before: str | None = None) -> list[dict[str, Any]]:
        query = select(reports).order_by(reports.c.created_at.desc(), reports.c.id).limit(limit)
        if before is not None:
            created = select(reports.c.created_at).where(reports.c.id == before).scalar_subquery()
            query = query.where(reports.c.created_at < created)
        return [dict(row._mapping) for row in await self._read(query)]

    async def in_status(self, status: str) -> list[str]:
        return [
            row[0]
            for row in await self._read(select(reports.c.id).where(reports.c.status == status))
        ]

    async def lines(
        self,
        report_id: str,
        *,
        limit: int,
        after: int | None = None,
        line_class: str | None = None,
    ) -> list[dict[str, Any]]:
        query = (
            select(report_lines)
            .where(report_lines.c.report_id == report_id)
            .order_by(report_lines.c.seq)
            .limit(limit)
        )
        if after is not None:
            query = query.where(report_lines.c.seq > after)
        if line_class is not None:
            query = query.where(report_lines.c["class"] == line_class)
        return [dict(row._mapping) for row in await self._read(query)]

    async def payouts(self, report_id: str) -> list[dict[str, Any]]:
        query = (
            select(report_payouts)
            .where(report_payouts.c.report_id == report_id)
            .order_by(report_payouts.c.payout_id, report_payouts.c.currency)
        )
        return [dict(row._mapping) for row in await self._read(query)]


def _figures(provider: str, rows: Sequence[Any]) -> dict[tuple[str, str], LedgerFigures]:
    """Per (kind, provider id): net on the provider balance, fees booked, the currency."""
    net: dict[tuple[str, str], int] = {}
    fee: dict[tuple[str, str], int] = {}
    meta: dict[tuple[str, str], tuple[str, str]] = {}
    for transaction_id, kind, provider_ref, account, currency, total in rows:
        key = (kind, provider_ref)
        meta.setdefault(key, (transaction_id, currency))
        net.setdefault(key, 0)
        if account == ledger.provider_balance(provider):
            net[key] += int(total)
        elif account == ledger.provider_fees(provider):
            fee[key] = fee.get(key, 0) + int(total)
    return {
        key: LedgerFigures(
            transaction_id=meta[key][0], currency=meta[key][1], net=net[key], fee=fee.get(key)
        )
        for key in meta
    }


__all__ = ["LineClass", "SqlReports"]
