"""Reading settlement reports and judging their lines, without I/O."""

from __future__ import annotations

import pytest

from riverbed_payments.domain.ledger import Kind
from riverbed_payments.domain.reconciliation import (
    LedgerFigures,
    LineClass,
    PayoutTotals,
    RecordSplitter,
    ReportError,
    classify,
    header_columns,
    parse_line,
    split_record,
)

COLUMNS = header_columns(
    ["id", "type", "source", "amount", "fee", "net", "currency", "payout_id", "created"]
)


def _records(chunks: list[str], limit: int = 1000) -> list[str]:
    splitter = RecordSplitter(limit)
    out = [r for chunk in chunks for r in splitter.feed(chunk)]
    return out + list(splitter.close())


def test_records_split_at_line_breaks_outside_quotes_whatever_the_chunking() -> None:
    text = 'a,b\n1,"two\nlines, and ""quotes"""\n3,x\n'
    expected = ["a,b\n", '1,"two\nlines, and ""quotes"""\n', "3,x\n"]
    for size in (1, 2, 3, 7, len(text)):
        assert _records([text[i : i + size] for i in range(0, len(text), size)]) == expected
    assert split_record(expected[1], 2) == ["1", 'two\nlines, and "quotes"']


def test_a_record_longer_than_the_limit_is_refused_rather_than_buffered() -> None:
    with pytest.raises(ReportError, match="longer than 50"):
        _records(['a,"unclosed ' + "x" * 100], limit=50)
    with pytest.raises(ReportError, match="ends inside a quoted field"):
        _records(['a,"unclosed'])


def test_the_header_accepts_the_providers_own_column_names() -> None:
    columns = header_columns(
        ["balance_transaction_id", "Created (UTC)", "created_utc", "currency", "gross", "fee",
         "net", "reporting_category", "source_id", "automatic_payout_id", "description"]
    )  # fmt: skip
    assert columns["id"] == 0
    assert columns["amount"] == 4
    assert columns["payout_id"] == 9
    with pytest.raises(ReportError, match=r"lacks \['fee'\]"):
        header_columns(["id", "type", "source", "amount", "net", "currency", "created"])


def test_a_line_becomes_signed_minor_units_in_utc() -> None:
    line = parse_line(
        ["txn_1", "charge", "pi_1", "19.99", "0.59", "19.40", "eur", "po_1", "2024-05-01 12:00:00"],
        COLUMNS,
        2,
    )
    assert (line.kind, line.amount, line.fee, line.net, line.currency) == (
        Kind.PAYMENT, 1999, 59, 1940, "EUR",
    )  # fmt: skip
    assert line.created.isoformat() == "2024-05-01T12:00:00+00:00"
    payout = parse_line(
        ["txn_9", "payout", "po_1", "-19.40", "0", "-19.40", "EUR", "", "1714564800"], COLUMNS, 3
    )
    assert (payout.amount, payout.payout_id) == (-1940, "po_1"), "a payout line is its own payout"


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        (["t", "transfer", "x", "1.00", "0", "1.00", "EUR", "", "1"], "type 'transfer'"),
        (["t", "charge", "x", "1.00", "0.10", "1.00", "EUR", "", "1"], "amount - fee != net"),
        (["t", "refund", "x", "5.00", "0", "5.00", "EUR", "", "1"], "negative amount"),
        (["t", "charge", "x", "1.001", "0", "1.001", "EUR", "", "1"], "decimal places"),
        (["t", "charge", "x", "1.00", "0", "1.00", "ZZZ", "", "1"], "ISO 4217"),
        (["t", "charge", "x", "1.00", "0", "1.00", "EUR", "", "yesterday"], "not a time"),
        (["t", "charge", "", "1.00", "0", "1.00", "EUR", "", "1"], "source must be"),
    ],
)
def test_a_bad_line_is_refused_naming_the_line_and_what_is_accepted(
    fields: list[str], why: str
) -> None:
    with pytest.raises(ReportError, match=why) as caught:
        parse_line(fields, COLUMNS, 17)
    assert caught.value.line == 17


def _line(amount: int, fee: int, currency: str = "EUR") -> object:
    return parse_line(
        ["t", "charge", "pi_1", f"{amount / 100:.2f}", f"{fee / 100:.2f}",
         f"{(amount - fee) / 100:.2f}", currency, "", "1"],
        COLUMNS,
        2,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("ledger", "expected"),
    [
        (None, LineClass.MISSING_IN_LEDGER),
        (LedgerFigures("x", "EUR", net=1940, fee=59), LineClass.MATCHED),
        (LedgerFigures("x", "EUR", net=1999, fee=None), LineClass.MATCHED),
        (LedgerFigures("x", "EUR", net=1840, fee=59), LineClass.AMOUNT_MISMATCH),
        (LedgerFigures("x", "EUR", net=1949, fee=50), LineClass.AMOUNT_MISMATCH),
        (LedgerFigures("x", "USD", net=1940, fee=59), LineClass.AMOUNT_MISMATCH),
    ],
    ids=["absent", "same", "fee-unknown", "amount", "fee", "currency"],
)
def test_lines_are_classified_against_the_ledgers_figures(
    ledger: LedgerFigures | None, expected: LineClass
) -> None:
    found, detail = classify(_line(1999, 59), ledger)  # type: ignore[arg-type]
    assert found is expected
    assert bool(detail) == (expected is not LineClass.MATCHED)


def test_a_payout_balances_when_gross_minus_fees_refunds_and_disputes_is_what_was_paid() -> None:
    ok = PayoutTotals("po_1", "EUR", gross=5000, fees=150, refunds=500, disputes=1000,
                      payout_amount=3350)  # fmt: skip
    assert ok.balanced
    assert ok.expected == 3350
    off = PayoutTotals("po_1", "EUR", 5000, 150, 500, 1000, payout_amount=3300)
    assert not off.balanced
    assert "3350" in off.detail()
    assert "3300" in off.detail()
    assert not PayoutTotals("po_2", "EUR", 5000, 0, 0, 0, None).balanced
