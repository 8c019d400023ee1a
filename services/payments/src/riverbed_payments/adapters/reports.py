"""Settlement reports and their reconciliation in SQL: lines in, classes and totals out
(what the ledger says of each line: ``adapters/ledger_figures.py``).

Every method is one short transaction over at most one chunk of lines, so a report
of any size is stored and matched in bounded memory. Events the job emits go into
the outbox in the same transaction as the rows they report.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from riverbed.outbox import OutboxMessage, add_to_outbox
from riverbed.sql import read_only, upsert
from riverbed_payments.adapters import ledger_figures
from riverbed_payments.adapters.tables import outbox, report_lines, report_payouts, reports
from riverbed_payments.domain.ledger import Kind
from riverbed_payments.domain.reconciliation import LineClass, PayoutTotals, ReportLine
from riverbed_payments.service_layer.ports import FiguresByKey

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
    """The :class:`~riverbed_payments.service_layer.ports.ReportStore` over SQL, and the
    reads the API makes of reports."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.reader = read_only(engine)

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
    ) -> FiguresByKey:
        """(kind, provider id) -> the ledger's figures for that transaction, where recorded."""
        return await ledger_figures.recorded(self.reader, provider, wanted)

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
            await add_to_outbox(conn, outbox, events, at=at)

    async def not_in_report(
        self, report_id: str, provider: str, start: datetime, end: datetime, limit: int
    ) -> FiguresByKey:
        """Ledger transactions of the period the report does not account for (at most
        ``limit``)."""
        return await ledger_figures.not_in_report(
            self.reader, report_id, provider, start, end, limit
        )

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
            await add_to_outbox(conn, outbox, events, at=at)
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
            await add_to_outbox(conn, outbox, events, at=at)

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
            await add_to_outbox(conn, outbox, [event], at=at)

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


__all__ = ["LineClass", "SqlReports"]
