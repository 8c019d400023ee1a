"""The ports the use cases need, and the records they read back: the SQL adapters
implement them (``adapters/ledger.py``, ``adapters/reports.py``), tests may fake them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from riverbed.outbox import OutboxMessage
from riverbed_payments.domain.ledger import DisputeFacts, Kind, PaymentFacts, Posting, Transaction
from riverbed_payments.domain.reconciliation import LedgerFigures, PayoutTotals, ReportLine

#: what time it is (an aware UTC datetime); tests pass a clock they move
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class StoredTransaction:
    """A transaction as the ledger stored it: when it was recorded, from which event."""

    id: str
    kind: Kind
    provider: str
    provider_ref: str
    payment_ref: str | None
    reverses_id: str | None
    description: str
    occurred_at: datetime
    recorded_at: datetime
    event_id: str
    postings: tuple[Posting, ...]


@dataclass(frozen=True)
class Balance:
    """An account's balance in one currency, summed from its postings."""

    account: str
    currency: str
    balance: int  # minor units, debit positive
    postings: int  # how many postings it sums


class LedgerUnit(Protocol):
    """What one unit of work (one database transaction) can do."""

    async def claim_message(
        self, group: str, event_id: str, *, stream: str, event_type: str, at: datetime
    ) -> bool: ...

    async def set_outcome(self, group: str, event_id: str, outcome: str) -> None: ...

    async def find(
        self, kind: Kind, provider: str, provider_ref: str
    ) -> StoredTransaction | None: ...

    async def payment_facts(
        self, provider: str, provider_payment_id: str
    ) -> PaymentFacts | None: ...

    async def dispute_facts(
        self, provider: str, provider_dispute_id: str
    ) -> DisputeFacts | None: ...

    async def append(self, transaction: Transaction, *, event_id: str, at: datetime) -> None: ...

    async def add_failure(self, **values: Any) -> None: ...

    async def add_outbox(self, messages: Sequence[OutboxMessage], *, at: datetime) -> None: ...


class Ledger(Protocol):
    def unit(self) -> AbstractAsyncContextManager[LedgerUnit]: ...


#: (ledger transaction kind, provider id) -> the ledger's figures for it
FiguresByKey = dict[tuple[str, str], LedgerFigures]


class ReportStore(Protocol):
    """Where settlement reports, their lines and their findings are kept; each method is
    one short transaction (events go into the outbox with the rows they report)."""

    async def create(
        self, report_id: str, provider: str, filename: str | None, at: datetime
    ) -> None: ...

    async def add_lines(self, report_id: str, lines: Sequence[ReportLine]) -> None: ...

    async def received(
        self,
        report_id: str,
        *,
        lines: int,
        period_start: datetime | None,
        period_end: datetime | None,
    ) -> None: ...

    async def fail(self, report_id: str, error: str, at: datetime) -> None: ...

    async def get(self, report_id: str) -> dict[str, Any] | None: ...

    async def unclassified(self, report_id: str, limit: int) -> list[Any]: ...

    async def ledger_figures(
        self, provider: str, wanted: Sequence[tuple[str, str]]
    ) -> FiguresByKey: ...

    async def classify(
        self, updates: Sequence[dict[str, Any]], events: Sequence[OutboxMessage], at: datetime
    ) -> None: ...

    async def not_in_report(
        self, report_id: str, provider: str, start: datetime, end: datetime, limit: int
    ) -> FiguresByKey: ...

    async def add_missing(
        self, rows: Sequence[dict[str, Any]], events: Sequence[OutboxMessage], at: datetime
    ) -> list[int]: ...

    async def payout_totals(self, report_id: str) -> list[PayoutTotals]: ...

    async def save_payouts(
        self,
        report_id: str,
        totals: Sequence[PayoutTotals],
        events: Sequence[OutboxMessage],
        at: datetime,
    ) -> None: ...

    async def class_counts(self, report_id: str) -> dict[str, int]: ...

    async def complete(
        self, report_id: str, counts: dict[str, int], event: OutboxMessage, at: datetime
    ) -> None: ...
