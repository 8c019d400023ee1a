"""The ledger as a settlement report shows it: per transaction, its net effect on the
provider balance and the fees it booked (:class:`LedgerFigures`), for the lines of a
report and for the transactions of its period that no line accounts for."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from riverbed_payments.adapters.ledger import posting_sums
from riverbed_payments.adapters.tables import report_lines, transactions
from riverbed_payments.domain import ledger
from riverbed_payments.domain.reconciliation import REPORTED_KINDS, LedgerFigures
from riverbed_payments.service_layer.ports import FiguresByKey


async def recorded(
    reader: AsyncEngine, provider: str, wanted: Sequence[tuple[str, str]]
) -> FiguresByKey:
    """(kind, provider id) -> the ledger's figures for that transaction, for those of
    ``wanted`` the ledger has."""
    if not wanted:
        return {}
    condition = and_(
        transactions.c.provider == provider,
        tuple_(transactions.c.kind, transactions.c.provider_ref).in_(list(wanted)),
    )
    return await _figures_where(reader, provider, condition)


async def not_in_report(
    reader: AsyncEngine,
    report_id: str,
    provider: str,
    start: datetime,
    end: datetime,
    limit: int,
) -> FiguresByKey:
    """Ledger transactions in the period that move the provider balance and that no line of
    the report (nor an earlier pass of this job) accounts for; at most ``limit``."""
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
    found = [row[0] for row in await _read(reader, ids)]
    if not found:
        return {}
    return await _figures_where(reader, provider, transactions.c.id.in_(found))


async def _figures_where(reader: AsyncEngine, provider: str, condition: Any) -> FiguresByKey:
    query = posting_sums(
        transactions.c.id, transactions.c.kind, transactions.c.provider_ref, where=condition
    )
    return _figures(provider, await _read(reader, query))


async def _read(reader: AsyncEngine, query: Any) -> list[Any]:
    async with reader.connect() as conn:
        return list((await conn.execute(query)).all())


def _figures(provider: str, rows: Sequence[Any]) -> FiguresByKey:
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
