"""Settlement reports: the CSV layout, parsing it in bounded memory, and classifying lines.

The layout is modelled on a provider's balance-transaction export (Stripe's
"Balance" and "Itemized payout reconciliation" reports): one line per movement of
the provider balance, with its gross ``amount``, the ``fee`` taken and the ``net``
that reached the balance. README.md documents it; the column aliases below let an
export with the provider's own column names through unchanged.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from riverbed.errors import RiverbedError
from riverbed_payments.domain.currency import InvalidAmount, check_currency, to_minor_units
from riverbed_payments.domain.ledger import Kind

REQUIRED: Final = ("id", "type", "source", "amount", "fee", "net", "currency", "created")
OPTIONAL: Final = ("payout_id", "description")
#: the provider's own column names (Stripe's itemized reports) -> ours
ALIASES: Final = {
    "balance_transaction_id": "id",
    "reporting_category": "type",
    "source_id": "source",
    "gross": "amount",
    "automatic_payout_id": "payout_id",
    "payout": "payout_id",
    "created_utc": "created",
}
#: line ``type`` -> the ledger transaction kind it matches, and the sign its amount has
TYPES: Final[dict[str, tuple[Kind, int]]] = {
    "charge": (Kind.PAYMENT, 1),
    "payment": (Kind.PAYMENT, 1),
    "refund": (Kind.REFUND, -1),
    "payment_refund": (Kind.REFUND, -1),
    "dispute": (Kind.DISPUTE, -1),
    "dispute_reversal": (Kind.DISPUTE_REVERSAL, 1),
    "payout": (Kind.PAYOUT, -1),
}
#: kinds that move the provider balance, so that a report must show them
REPORTED_KINDS: Final = (
    Kind.PAYMENT,
    Kind.REFUND,
    Kind.DISPUTE,
    Kind.DISPUTE_REVERSAL,
    Kind.PAYOUT,
)


class LineClass(StrEnum):
    MATCHED = "matched"
    MISSING_IN_LEDGER = "missing_in_ledger"
    MISSING_AT_PROVIDER = "missing_at_provider"
    AMOUNT_MISMATCH = "amount_mismatch"


class ReportError(RiverbedError, ValueError):
    """The report cannot be read; ``line`` is the 1-based CSV line (header = 1), if any."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line
        self.reason = message


@dataclass(frozen=True)
class ReportLine:
    line: int
    id: str
    type: str
    kind: Kind
    source: str
    amount: int  # minor units, signed as the provider reports (payouts and refunds < 0)
    fee: int
    net: int
    currency: str
    payout_id: str | None
    created: datetime


# -- reading: records, header, lines ----------------------------------------------------


class RecordSplitter:
    """Text in, complete CSV records out, holding at most one record in memory.

    A record ends at a line break outside quotes; with RFC 4180 quoting (a quote in a
    field is doubled) that is a line break after an even number of quote characters.
    """

    def __init__(self, max_record_chars: int) -> None:
        self.max_record_chars = max_record_chars
        self._pending = ""
        self._quotes = 0  # quote characters in the pending record so far
        self.records = 0

    def feed(self, text: str) -> Iterator[str]:
        start = 0
        while True:
            newline = text.find("\n", start)
            piece = text[start:] if newline < 0 else text[start : newline + 1]
            self._pending += piece
            self._quotes += piece.count('"')
            if len(self._pending) > self.max_record_chars:
                raise ReportError(
                    f"a record is longer than {self.max_record_chars} characters "
                    "(an unclosed quote?)",
                    self.records + 1,
                )
            if newline < 0:
                return
            start = newline + 1
            if self._quotes % 2 == 0:
                yield self._take()

    def close(self) -> Iterator[str]:
        if self._pending.strip():
            if self._quotes % 2:
                raise ReportError("the report ends inside a quoted field", self.records + 1)
            yield self._take()

    def _take(self) -> str:
        record, self._pending, self._quotes = self._pending, "", 0
        self.records += 1
        return record


def split_record(record: str, line: int) -> list[str]:
    try:
        return next(csv.reader([record.rstrip("\r\n")], strict=True))
    except (csv.Error, StopIteration) as error:
        raise ReportError(f"not a CSV record: {error}", line) from None


def header_columns(fields: list[str]) -> dict[str, int]:
    """Column name -> index, from the header; names are normalised and aliases applied."""
    columns: dict[str, int] = {}
    for index, name in enumerate(fields):
        key = name.strip().lower().lstrip("\ufeff").replace(" ", "_")
        key = ALIASES.get(key, key)
        columns.setdefault(key, index)
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        raise ReportError(
            f"the header lacks {missing}; required columns: {', '.join(REQUIRED)} "
            f"(optional: {', '.join(OPTIONAL)})",
            1,
        )
    return columns


def _created(text: str, line: int) -> datetime:
    value = text.strip()
    try:
        if value.isdigit():
            return datetime.fromtimestamp(int(value), UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise ReportError(
            f"created {text!r} is not a time (2024-05-01 12:00:00, ISO 8601 or Unix seconds)",
            line,
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_line(fields: list[str], columns: dict[str, int], line: int) -> ReportLine:
    """One report line, validated: known type, sign, currency, decimals, amount - fee = net."""

    def get(name: str) -> str:
        index = columns.get(name)
        if index is None or index >= len(fields):
            return ""
        return fields[index].strip()

    if len(fields) < len(columns) and len(fields) <= max(columns[n] for n in REQUIRED):
        raise ReportError(f"{len(fields)} fields, the header has {len(columns)}", line)
    raw_type = get("type").lower()
    if raw_type not in TYPES:
        raise ReportError(f"type {raw_type!r} is not one of {', '.join(TYPES)}", line)
    kind, sign = TYPES[raw_type]
    for name in ("id", "source"):
        if not get(name) or len(get(name)) > 255:
            raise ReportError(f"{name} must be 1-255 characters", line)
    currency = get("currency").upper()
    try:
        check_currency(currency)
        amount, fee, net = (to_minor_units(get(n), currency) for n in ("amount", "fee", "net"))
    except InvalidAmount as error:
        raise ReportError(str(error), line) from None
    if amount == 0 or (amount > 0) != (sign > 0):
        raise ReportError(
            f"a {raw_type} line has a {'positive' if sign > 0 else 'negative'} amount, "
            f"got {get('amount')}",
            line,
        )
    if amount - fee != net:
        raise ReportError(
            f"amount - fee != net ({get('amount')} - {get('fee')} != {get('net')})", line
        )
    payout_id = get("payout_id") or None
    if kind is Kind.PAYOUT and payout_id is None:
        payout_id = get("source")  # a payout line is its own payout
    return ReportLine(
        line=line,
        id=get("id"),
        type=raw_type,
        kind=kind,
        source=get("source"),
        amount=amount,
        fee=fee,
        net=net,
        currency=currency,
        payout_id=payout_id,
        created=_created(get("created"), line),
    )


# -- judging ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerFigures:
    """A ledger transaction as the provider's report would show it."""

    transaction_id: str
    currency: str
    net: int  # effect on the provider balance
    fee: int | None  # provider fees booked; None when the ledger did not learn them

    @property
    def amount(self) -> int:
        return self.net + (self.fee or 0)


def classify(line: ReportLine, ledger: LedgerFigures | None) -> tuple[LineClass, str]:
    """How ``line`` compares with the ledger's transaction for the same provider object.

    The fee is compared only when the ledger booked one: a payment event that did not
    carry its fee is matched on its gross amount.
    """
    if ledger is None:
        return LineClass.MISSING_IN_LEDGER, f"no {line.kind.value} {line.source} in the ledger"
    if ledger.currency != line.currency:
        return (
            LineClass.AMOUNT_MISMATCH,
            f"currency {line.currency} at the provider, {ledger.currency} in the ledger",
        )
    problems = []
    if ledger.amount != line.amount:
        problems.append(f"amount {line.amount} at the provider, {ledger.amount} in the ledger")
    if ledger.fee is not None and ledger.fee != line.fee:
        problems.append(f"fee {line.fee} at the provider, {ledger.fee} in the ledger")
    if problems:
        return LineClass.AMOUNT_MISMATCH, "; ".join(problems)
    return LineClass.MATCHED, ""


@dataclass(frozen=True)
class PayoutTotals:
    """A payout's lines summed: gross - fees - refunds - disputes must equal the payout."""

    payout_id: str
    currency: str
    gross: int  # payments
    fees: int
    refunds: int  # as a positive number
    disputes: int  # disputes net of reversals, as a positive number
    payout_amount: int | None  # what was paid out (positive); None: no payout line

    @property
    def expected(self) -> int:
        return self.gross - self.fees - self.refunds - self.disputes

    @property
    def balanced(self) -> bool:
        return self.payout_amount is not None and self.payout_amount == self.expected

    def detail(self) -> str:
        if self.payout_amount is None:
            return f"no payout line for {self.payout_id} in the report"
        return (
            f"gross {self.gross} - fees {self.fees} - refunds {self.refunds} - disputes "
            f"{self.disputes} = {self.expected}, but {self.payout_amount} was paid out"
        )
