"""The ledger's domain without I/O: currencies, balanced postings, how each fact posts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from riverbed_payments.domain import ledger
from riverbed_payments.domain.currency import (
    InvalidAmount,
    check_currency,
    format_amount,
    to_minor_units,
)
from riverbed_payments.domain.ledger import Kind, PaymentFacts, Posting, UnbalancedTransaction
from riverbed_payments.domain.receipt import receipt, receipt_address
from riverbed_payments.testing import T0

PROVIDER, FEES = ledger.provider_balance("stripe"), ledger.provider_fees("stripe")


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [("19.99", "EUR", 1999), ("-5.00", "USD", -500), ("1500", "JPY", 1500), ("1.234", "KWD", 1234),
     ("0.0001", "CLF", 1), ("7", "EUR", 700)],
)  # fmt: skip
def test_decimal_amounts_become_minor_units_by_the_currency_exponent(
    text: str, currency: str, minor: int
) -> None:
    assert to_minor_units(text, currency) == minor


@pytest.mark.parametrize(
    ("text", "currency", "why"),
    [("19.999", "EUR", "more decimal places"), ("5.5", "JPY", "more decimal places"),
     ("1,999.00", "EUR", "not a decimal"), ("1e3", "EUR", "not a decimal"),
     ("", "EUR", "not a decimal"), ("1.00", "XAU", "not an active ISO 4217")],
)  # fmt: skip
def test_amounts_that_would_need_rounding_or_guessing_are_refused(
    text: str, currency: str, why: str
) -> None:
    with pytest.raises(InvalidAmount, match=why):
        to_minor_units(text, currency)


@pytest.mark.parametrize("code", ["XYZ", "XXX", "XDR", "eur", "EURO", "HRK"])
def test_only_active_iso_4217_currencies_with_a_minor_unit_are_accepted(code: str) -> None:
    with pytest.raises(InvalidAmount, match="ISO 4217"):
        check_currency(code)


def test_amounts_format_for_humans() -> None:
    assert format_amount(123_456, "EUR") == "1,234.56 EUR"
    assert format_amount(500, "JPY") == "500 JPY"
    assert format_amount(-5, "KWD") == "-0.005 KWD"


@pytest.mark.parametrize(
    ("postings", "why"),
    [
        ([Posting("a", 5, "EUR")], "at least 2"),
        ([Posting("a", 5, "EUR"), Posting("b", -4, "EUR")], "sum to zero"),
        ([Posting("a", 5, "EUR"), Posting("b", -5, "USD")], "sum to zero"),
        ([Posting("a", 0, "EUR"), Posting("b", 0, "EUR")], "zero posting"),
        ([Posting("a", 5.0, "EUR"), Posting("b", -5, "EUR")], "not an integer"),  # type: ignore[arg-type]
    ],
)
def test_a_transaction_must_be_a_balanced_double_entry(postings: list[Posting], why: str) -> None:
    with pytest.raises(UnbalancedTransaction, match=why):
        ledger.check_balanced(postings)


def test_an_unknown_currency_in_a_posting_is_an_invalid_amount() -> None:
    with pytest.raises(InvalidAmount):
        ledger.check_balanced([Posting("a", 5, "XYZ"), Posting("b", -5, "XYZ")])


def _paid(**changes: int) -> PaymentFacts:
    facts = PaymentFacts("txn-pay", "stripe", "pi_1", "EUR", amount=1999)
    return replace(facts, **changes)


def test_a_payment_posts_gross_to_sales_net_to_the_provider_and_the_fee_to_fees() -> None:
    txn = ledger.payment(provider="stripe", provider_payment_id="pi_1", amount=1999,
                         currency="EUR", fee=59, occurred_at=T0)  # fmt: skip
    assert txn.postings == (
        Posting(PROVIDER, 1940, "EUR"),
        Posting(FEES, 59, "EUR"),
        Posting(ledger.SALES, -1999, "EUR"),
    )
    assert txn.id == ledger.transaction_id(Kind.PAYMENT, "stripe", "pi_1"), "deterministic"
    assert ledger.provider_view(list(txn.postings), "stripe") == (1940, 59)


def test_a_payment_without_a_known_fee_books_no_fee() -> None:
    txn = ledger.payment(provider="stripe", provider_payment_id="pi_1", amount=1999,
                         currency="EUR", fee=None, occurred_at=T0)  # fmt: skip
    assert ledger.provider_view(list(txn.postings), "stripe") == (1999, None)


@pytest.mark.parametrize(("amount", "fee"), [(1999, 2000), (0, None), (-5, None)])
def test_a_payment_with_an_impossible_amount_or_fee_is_refused(
    amount: int, fee: int | None
) -> None:
    with pytest.raises(InvalidAmount):
        ledger.payment(provider="stripe", provider_payment_id="pi_1", amount=amount,
                       currency="EUR", fee=fee, occurred_at=T0)  # fmt: skip


def test_a_refund_reverses_part_of_the_payment_and_fees_stay_spent() -> None:
    txn = ledger.refund(_paid(), provider_refund_id="re_1", amount=500, currency="EUR",
                        occurred_at=T0)  # fmt: skip
    assert txn.reverses == "txn-pay"
    assert txn.postings == (Posting(ledger.REFUNDS, 500, "EUR"), Posting(PROVIDER, -500, "EUR"))


@pytest.mark.parametrize(
    ("paid", "amount", "currency", "why"),
    [(_paid(refunded=1500), 500, "EUR", "exceeds"), (_paid(disputed=1999), 1, "EUR", "exceeds"),
     (_paid(), 500, "USD", "the payment is in EUR")],
)  # fmt: skip
def test_a_refund_beyond_what_is_left_or_in_another_currency_is_refused(
    paid: PaymentFacts, amount: int, currency: str, why: str
) -> None:
    with pytest.raises(InvalidAmount, match=why):
        ledger.refund(paid, provider_refund_id="re_1", amount=amount, currency=currency,
                      occurred_at=T0)  # fmt: skip


def test_a_dispute_withdraws_funds_and_a_won_dispute_reverses_it() -> None:
    opened = ledger.dispute_opened(_paid(), provider_dispute_id="dp_1", amount=1999,
                                   currency="EUR", fee=1500, occurred_at=T0)  # fmt: skip
    assert ledger.provider_view(list(opened.postings), "stripe") == (-3499, 1500)
    facts = ledger.DisputeFacts(opened.id, "stripe", "dp_1", "pi_1", "EUR", 1999)
    won = ledger.dispute_closed(facts, won=True, currency="EUR", occurred_at=T0)
    assert (won.kind, won.reverses) == (Kind.DISPUTE_REVERSAL, opened.id)
    assert ledger.provider_view(list(won.postings), "stripe") == (1999, None)
    lost = ledger.dispute_closed(facts, won=False, currency="EUR", occurred_at=T0)
    assert lost.kind is Kind.DISPUTE_LOSS
    assert ledger.provider_view(list(lost.postings), "stripe") == (0, None)
    assert lost.net(ledger.disputed("stripe")) == -1999


def test_a_payout_moves_the_provider_balance_to_the_bank() -> None:
    txn = ledger.payout(provider="stripe", provider_payout_id="po_1", amount=1000,
                        currency="EUR", occurred_at=T0)  # fmt: skip
    assert txn.postings == (Posting(ledger.BANK, 1000, "EUR"), Posting(PROVIDER, -1000, "EUR"))


def test_the_receipt_goes_to_receipt_email_else_metadata_and_never_to_a_non_address() -> None:
    assert receipt_address("ada@example.com", {}) == "ada@example.com"
    assert receipt_address(None, {"receipt_email": "bob@example.org"}) == "bob@example.org"
    assert receipt_address(None, {"receipt_email": "not an address"}) is None
    assert receipt_address(None, {}) is None
    mail = receipt(to="ada@example.com", amount=1999, currency="EUR",
                   provider_payment_id="pi_1", paid_at=T0, description="Order 7")  # fmt: skip
    assert mail.subject == "Your receipt: 19.99 EUR"
    assert mail.text is not None
    assert "Order 7" in mail.text
    assert "pi_1" in mail.text
