"""The double-entry ledger: accounts, postings, transactions, and how each payment fact posts.

Sign convention: a posting's ``amount`` is in the currency's minor units, positive
for a debit and negative for a credit, never zero. A transaction's postings sum to
zero in every currency it touches — checked here when a :class:`Transaction` is
built, and again by the database when it is stored (see ``adapters/tables.py``).
The ledger is append-only: nothing is updated or deleted; a refund, a dispute or a
won dispute is a new transaction that reverses (part of) an earlier one, and every
balance is a sum of postings.

Chart of accounts (``<p>`` is the provider, e.g. ``stripe``):

==============================  =====================================================
``assets:provider:<p>``         money held for us at the provider (its balance)
``assets:disputed:<p>``         funds the provider withdrew for an open dispute
``assets:bank``                 money paid out to our bank
``income:sales``                gross sales captured (credit balance)
``income:refunds``              refunds given (a contra-income account: debit balance)
``expenses:fees:<p>``           the provider's fees (payments, disputes)
``expenses:dispute_losses``     disputes lost
==============================  =====================================================
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final

from riverbed.errors import RiverbedError
from riverbed_payments.domain.currency import InvalidAmount, check_currency

#: namespace of every deterministic id this service makes (transactions, emitted events)
NAMESPACE: Final = uuid.UUID("6a0e8a5c-4f4e-4a59-9d7c-2b8f0c1d7e31")

SALES: Final = "income:sales"
REFUNDS: Final = "income:refunds"
BANK: Final = "assets:bank"
DISPUTE_LOSSES: Final = "expenses:dispute_losses"


def provider_balance(provider: str) -> str:
    return f"assets:provider:{provider}"


def provider_fees(provider: str) -> str:
    return f"expenses:fees:{provider}"


def disputed(provider: str) -> str:
    return f"assets:disputed:{provider}"


def account_type(code: str) -> str:
    """``asset`` | ``income`` | ``expense``, from the code's first part."""
    kind = code.split(":", 1)[0]
    return {"assets": "asset", "income": "income", "expenses": "expense"}[kind]


class Kind(StrEnum):
    """What a ledger transaction records; with (provider, provider_ref) it is unique."""

    PAYMENT = "payment"
    REFUND = "refund"
    DISPUTE = "dispute"
    DISPUTE_REVERSAL = "dispute_reversal"  # dispute won: the withdrawn funds come back
    DISPUTE_LOSS = "dispute_loss"  # dispute lost: the withdrawn funds are written off
    PAYOUT = "payout"


class UnbalancedTransaction(RiverbedError, ValueError):
    """Postings that do not sum to zero per currency, or that are not postings at all."""


def deterministic_id(*parts: str) -> str:
    """A UUID5 of ``parts``: the same facts always get the same id (redelivery, replays)."""
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))


def transaction_id(kind: Kind, provider: str, provider_ref: str) -> str:
    return deterministic_id("txn", kind.value, provider, provider_ref)


@dataclass(frozen=True)
class Posting:
    account: str
    amount: int  # minor units; + debit, - credit
    currency: str


@dataclass(frozen=True)
class Transaction:
    """A balanced set of postings about one provider object (payment, refund, …)."""

    id: str
    kind: Kind
    provider: str
    provider_ref: str  # the provider object it records: payment, refund, dispute, payout id
    payment_ref: str | None  # the payment it belongs to (refunds, disputes)
    reverses: str | None  # the transaction it (partly) reverses
    occurred_at: datetime
    postings: tuple[Posting, ...]
    description: str = ""

    def __post_init__(self) -> None:
        check_balanced(self.postings)

    @property
    def currencies(self) -> set[str]:
        return {p.currency for p in self.postings}

    def net(self, account: str) -> int:
        return sum(p.amount for p in self.postings if p.account == account)


def check_balanced(postings: tuple[Posting, ...] | list[Posting]) -> None:
    """Refuse postings that are not a balanced double entry, naming what is wrong."""
    if len(postings) < 2:
        raise UnbalancedTransaction(f"a transaction needs at least 2 postings, got {len(postings)}")
    totals: dict[str, int] = defaultdict(int)
    for posting in postings:
        if type(posting.amount) is not int:
            raise UnbalancedTransaction(f"amount {posting.amount!r} is not an integer")
        if posting.amount == 0:
            raise UnbalancedTransaction(f"zero posting to {posting.account}")
        check_currency(posting.currency)
        totals[posting.currency] += posting.amount
    unbalanced = {currency: total for currency, total in totals.items() if total != 0}
    if unbalanced:
        raise UnbalancedTransaction(f"postings do not sum to zero: {unbalanced}")


# -- how each fact posts ----------------------------------------------------------------


@dataclass(frozen=True)
class PaymentFacts:
    """What the ledger knows of a recorded payment (from its transaction's postings)."""

    transaction_id: str
    provider: str
    provider_payment_id: str
    currency: str
    amount: int  # gross captured
    refunded: int = 0  # refunds recorded so far
    disputed: int = 0  # withdrawn for disputes (open or lost) so far


@dataclass(frozen=True)
class DisputeFacts:
    transaction_id: str
    provider: str
    provider_dispute_id: str
    provider_payment_id: str
    currency: str
    amount: int  # withdrawn
    closed: bool = False


@dataclass
class _Builder:
    postings: list[Posting] = field(default_factory=list)

    def post(self, account: str, amount: int, currency: str) -> _Builder:
        if amount:
            self.postings.append(Posting(account, amount, currency))
        return self


def _positive(amount: int, what: str) -> int:
    if type(amount) is not int or amount <= 0:
        raise InvalidAmount(f"{what} must be a positive integer of minor units, got {amount!r}")
    return amount


def _same_currency(given: str, expected: str, what: str) -> None:
    if given != expected:
        raise InvalidAmount(f"{what} is in {given}, but the payment is in {expected}")


def _within_payment(paid: PaymentFacts, amount: int, currency: str, what: str) -> str:
    """Refuse a refund or dispute (``what``) of ``amount`` that the payment cannot cover:
    another currency, or more than is left after what was refunded and disputed."""
    check_currency(currency)
    _positive(amount, "amount")
    _same_currency(currency, paid.currency, f"the {what}")
    left = paid.amount - paid.refunded - paid.disputed
    if amount > left:
        raise InvalidAmount(
            f"{what} of {amount} exceeds what is left of payment {paid.provider_payment_id}: "
            f"{left} of {paid.amount} (refunded {paid.refunded}, disputed {paid.disputed})"
        )
    return currency


def _transaction(
    kind: Kind,
    provider: str,
    provider_ref: str,
    builder: _Builder,
    *,
    payment_ref: str | None,
    reverses: str | None,
    occurred_at: datetime,
    description: str = "",
) -> Transaction:
    """The transaction of ``kind`` about provider object ``provider_ref``: its id derives
    from those, so the same fact always gets the same transaction."""
    return Transaction(
        id=transaction_id(kind, provider, provider_ref),
        kind=kind,
        provider=provider,
        provider_ref=provider_ref,
        payment_ref=payment_ref,
        reverses=reverses,
        occurred_at=occurred_at,
        postings=tuple(builder.postings),
        description=description,
    )


def payment(
    *,
    provider: str,
    provider_payment_id: str,
    amount: int,
    currency: str,
    fee: int | None,
    occurred_at: datetime,
    description: str = "",
) -> Transaction:
    """Captured: the provider holds gross - fee for us; sales +gross; fees +fee (when known)."""
    check_currency(currency)
    _positive(amount, "amount")
    fee = fee or 0
    if fee < 0 or fee > amount:
        raise InvalidAmount(f"fee_amount {fee} must be between 0 and the amount {amount}")
    postings = (
        _Builder()
        .post(provider_balance(provider), amount - fee, currency)
        .post(provider_fees(provider), fee, currency)
        .post(SALES, -amount, currency)
    )
    return _transaction(
        Kind.PAYMENT,
        provider,
        provider_payment_id,
        postings,
        payment_ref=provider_payment_id,
        reverses=None,
        occurred_at=occurred_at,
        description=description,
    )


def refund(
    paid: PaymentFacts,
    *,
    provider_refund_id: str,
    amount: int,
    currency: str,
    occurred_at: datetime,
    reason: str | None = None,
) -> Transaction:
    """A reversing transaction: refunds +amount, provider balance -amount (fees stay spent)."""
    _within_payment(paid, amount, currency, "refund")
    postings = (
        _Builder()
        .post(REFUNDS, amount, currency)
        .post(provider_balance(paid.provider), -amount, currency)
    )
    return _transaction(
        Kind.REFUND,
        paid.provider,
        provider_refund_id,
        postings,
        payment_ref=paid.provider_payment_id,
        reverses=paid.transaction_id,
        occurred_at=occurred_at,
        description=reason or "",
    )


def dispute_opened(
    paid: PaymentFacts,
    *,
    provider_dispute_id: str,
    amount: int,
    currency: str,
    fee: int | None,
    occurred_at: datetime,
    reason: str | None = None,
) -> Transaction:
    """Funds withdrawn (provider balance -> disputed) plus the dispute fee, if any."""
    _within_payment(paid, amount, currency, "dispute")
    fee = fee or 0
    if fee < 0:
        raise InvalidAmount(f"dispute fee_amount must be >= 0, got {fee}")
    postings = (
        _Builder()
        .post(disputed(paid.provider), amount, currency)
        .post(provider_fees(paid.provider), fee, currency)
        .post(provider_balance(paid.provider), -(amount + fee), currency)
    )
    return _transaction(
        Kind.DISPUTE,
        paid.provider,
        provider_dispute_id,
        postings,
        payment_ref=paid.provider_payment_id,
        reverses=paid.transaction_id,
        occurred_at=occurred_at,
        description=reason or "",
    )


def dispute_closed(
    dispute: DisputeFacts, *, won: bool, currency: str, occurred_at: datetime
) -> Transaction:
    """Won: reverse the withdrawal (disputed -> provider balance). Lost: write it off."""
    check_currency(currency)
    _same_currency(currency, dispute.currency, "the dispute's closing")
    if won:
        kind, other = Kind.DISPUTE_REVERSAL, provider_balance(dispute.provider)
    else:
        kind, other = Kind.DISPUTE_LOSS, DISPUTE_LOSSES
    postings = (
        _Builder()
        .post(other, dispute.amount, dispute.currency)
        .post(disputed(dispute.provider), -dispute.amount, dispute.currency)
    )
    return _transaction(
        kind,
        dispute.provider,
        dispute.provider_dispute_id,
        postings,
        payment_ref=dispute.provider_payment_id,
        reverses=dispute.transaction_id if won else None,
        occurred_at=occurred_at,
        description="dispute won" if won else "dispute lost",
    )


def payout(
    *, provider: str, provider_payout_id: str, amount: int, currency: str, occurred_at: datetime
) -> Transaction:
    """Paid out: provider balance -> bank."""
    check_currency(currency)
    _positive(amount, "amount")
    postings = (
        _Builder().post(BANK, amount, currency).post(provider_balance(provider), -amount, currency)
    )
    return _transaction(
        Kind.PAYOUT,
        provider,
        provider_payout_id,
        postings,
        payment_ref=None,
        reverses=None,
        occurred_at=occurred_at,
    )


def provider_view(transaction_postings: list[Posting], provider: str) -> tuple[int, int | None]:
    """(net, fee) of a transaction as the provider's balance report shows it.

    ``net``: its effect on the provider balance; ``fee``: the provider fees it books,
    or None when it books none (the ledger did not learn the fee).
    """
    net = sum(p.amount for p in transaction_postings if p.account == provider_balance(provider))
    fees = [p.amount for p in transaction_postings if p.account == provider_fees(provider)]
    return net, (sum(fees) if fees else None)
