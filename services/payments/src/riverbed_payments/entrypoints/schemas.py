"""What the API answers with (and what its OpenAPI document shows)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from riverbed.problems import row_cursor_check, row_cursor_query
from riverbed_payments.service_layer.ports import Balance, StoredTransaction

#: ``?after=``: a report's lines after this line number (a ``LineList.next_after``)
AfterLine = Annotated[
    int | None,
    row_cursor_query(0, "a line number (next_after)"),
    row_cursor_check("after", 0, "a line number (next_after)"),
]


class PostingOut(BaseModel):
    account: str
    amount: int  # minor units; debit positive
    currency: str


class TransactionOut(BaseModel):
    id: str
    kind: str
    provider: str
    provider_ref: str
    payment_ref: str | None
    reverses_id: str | None
    description: str
    occurred_at: datetime
    recorded_at: datetime
    event_id: str
    postings: list[PostingOut]

    @classmethod
    def of(cls, t: StoredTransaction) -> TransactionOut:
        return cls.model_validate(t, from_attributes=True)


class TransactionList(BaseModel):
    data: list[TransactionOut]
    next_after: str | None


class BalanceOut(BaseModel):
    account: str
    currency: str
    balance: int  # minor units; debit positive
    postings: int

    @classmethod
    def of(cls, b: Balance) -> BalanceOut:
        return cls.model_validate(b, from_attributes=True)


class BalanceList(BaseModel):
    data: list[BalanceOut]


class FailureOut(BaseModel):
    failure_code: str
    failure_message: str | None
    amount: int
    currency: str
    occurred_at: datetime
    event_id: str


class PaymentOut(BaseModel):
    provider: str
    provider_payment_id: str
    status: str  # recorded | failed
    transactions: list[TransactionOut]
    failures: list[FailureOut]


class ReportOut(BaseModel):
    id: str
    provider: str
    status: str  # receiving | processing | completed | failed
    filename: str | None
    lines: int
    matched: int
    missing_in_ledger: int
    missing_at_provider: int
    amount_mismatch: int
    payouts: int
    payouts_unbalanced: int
    period_start: datetime | None
    period_end: datetime | None
    error: str | None
    created_at: datetime
    completed_at: datetime | None

    @classmethod
    def of(cls, row: dict[str, Any]) -> ReportOut:
        return cls.model_validate(row)


class ReportList(BaseModel):
    data: list[ReportOut]
    next_before: str | None


class LineOut(BaseModel):
    seq: int
    line: int | None
    provider_txn_id: str | None
    type: str
    source: str
    amount: int | None
    fee: int | None
    net: int | None
    currency: str
    payout_id: str | None
    created: datetime | None
    line_class: str | None = Field(serialization_alias="class")
    ledger_transaction_id: str | None
    ledger_amount: int | None
    ledger_fee: int | None
    ledger_net: int | None
    detail: str | None

    @classmethod
    def of(cls, row: dict[str, Any]) -> LineOut:
        return cls.model_validate({**row, "line_class": row["class"]})


class LineList(BaseModel):
    data: list[LineOut]
    next_after: int | None


class PayoutOut(BaseModel):
    payout_id: str
    currency: str
    gross: int
    fees: int
    refunds: int
    disputes: int
    payout_amount: int | None
    balanced: bool
    detail: str | None


class PayoutList(BaseModel):
    data: list[PayoutOut]
