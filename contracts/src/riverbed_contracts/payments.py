"""Payment contracts: what a payment provider reported, in integer minor units."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, ConfigDict, Field, StringConstraints

from riverbed_contracts.email import EmailAddress
from riverbed_contracts.payload import CalendarDate, Id, Payload, Timestamp

Currency = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z]{3}$"),
    Field(description="ISO 4217 alphabetic code, uppercase", examples=["EUR"]),
]
# strict: "10.50" or 10.5 is a unit mistake waiting to happen, never coerced.
MinorUnits = Annotated[
    int,
    Field(
        strict=True,
        gt=0,
        description="Amount in the currency's minor unit (cents for EUR; yen for JPY)",
    ),
]
ProviderName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=50, pattern=r"^[a-z][a-z0-9_-]*$"),
    Field(description="Payment provider, lowercase", examples=["stripe"]),
]

_EXAMPLE = {"provider": "stripe", "provider_payment_id": "pi_3P1x", "currency": "EUR"}


class ProviderPayment(Payload):
    """Fields every payment event has: which provider, which payment, how much."""

    provider: ProviderName
    provider_payment_id: Id = Field(description="The payment's id at the provider")
    amount: MinorUnits
    currency: Currency
    occurred_at: Timestamp | None = Field(
        default=None, description="When the provider says it happened (RFC 3339)"
    )


class PaymentSucceeded(ProviderPayment):
    """Event ``payment.succeeded.v1``: the provider captured a payment."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{**_EXAMPLE, "amount": 1999, "fee_amount": 59}]}
    )

    fee_amount: int | None = Field(
        default=None, strict=True, ge=0, description="Provider fee, same currency (minor units)"
    )
    customer_id: Id | None = None
    description: str | None = None
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Merchant's key/value pairs, e.g. order id"
    )
    receipt_email: EmailAddress | None = Field(
        default=None, description="Where the receipt goes (the provider's receipt_email)"
    )


class PaymentFailed(ProviderPayment):
    """Event ``payment.failed.v1``: the provider declined or could not complete a payment."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**_EXAMPLE, "amount": 1999, "failure_code": "card_declined"}]
        }
    )

    failure_code: str = Field(min_length=1, description="Provider's code, e.g. card_declined")
    failure_message: str | None = None


class PaymentRefunded(ProviderPayment):
    """Event ``payment.refunded.v1``: money went back; ``amount`` is this refund's amount."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**_EXAMPLE, "provider_refund_id": "re_1Q2w", "amount": 500}]
        }
    )

    provider_refund_id: Id = Field(description="The refund's id at the provider")
    reason: str | None = None


# -- disputes and payouts, as a provider reports them ------------------------------


class PaymentDisputeOpened(ProviderPayment):
    """Event ``payment.dispute.opened.v1``: a customer disputed a payment; funds were withdrawn.

    ``amount`` is what the provider withdrew from the balance for this dispute.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_EXAMPLE,
                    "provider_dispute_id": "dp_1Q2w",
                    "amount": 1999,
                    "fee_amount": 1500,
                    "reason": "fraudulent",
                }
            ]
        }
    )

    provider_dispute_id: Id = Field(description="The dispute's id at the provider")
    fee_amount: int | None = Field(
        default=None, strict=True, ge=0, description="Dispute fee, same currency (minor units)"
    )
    reason: str | None = None


class PaymentDisputeClosed(ProviderPayment):
    """Event ``payment.dispute.closed.v1``: a dispute was decided.

    ``won``: the withdrawn ``amount`` goes back to the balance; ``lost``: it stays withdrawn.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {**_EXAMPLE, "provider_dispute_id": "dp_1Q2w", "amount": 1999, "outcome": "won"}
            ]
        }
    )

    provider_dispute_id: Id = Field(description="The dispute's id at the provider")
    outcome: Literal["won", "lost"]


class PayoutPaid(Payload):
    """Event ``payment.payout.paid.v1``: the provider paid part of the balance out to the bank."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "provider": "stripe",
                    "provider_payout_id": "po_1P9z",
                    "amount": 118_200,
                    "currency": "EUR",
                    "arrival_date": "2024-05-03",
                }
            ]
        }
    )

    provider: ProviderName
    provider_payout_id: Id = Field(description="The payout's id at the provider")
    amount: MinorUnits
    currency: Currency
    arrival_date: CalendarDate | None = Field(default=None, description="When it reaches the bank")
    occurred_at: Timestamp | None = Field(
        default=None, description="When the provider says it happened (RFC 3339)"
    )


# -- what the payments service reports -------------------------------------------------

SignedMinorUnits = Annotated[
    int, Field(strict=True, description="Minor units; negative when money left the balance")
]
_RECORDED = {
    "transaction_id": "1f0c2a8e-5d1b-5c43-9e7a-3b2f1a0c9d84",
    "provider": "stripe",
    "provider_payment_id": "pi_3P1x",
    "currency": "EUR",
    "recorded_at": "2024-05-01T12:00:01Z",
}


class PaymentRecorded(Payload):
    """Event ``payment.recorded.v1``: a captured payment is in the ledger (once per payment)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**_RECORDED, "amount": 1999, "fee_amount": 59, "net_amount": 1940}]
        }
    )

    transaction_id: Id = Field(description="The ledger transaction that records it")
    provider: ProviderName
    provider_payment_id: Id
    amount: MinorUnits = Field(description="Gross amount captured (minor units)")
    currency: Currency
    fee_amount: int | None = Field(
        default=None, strict=True, ge=0, description="Provider fee when known (minor units)"
    )
    net_amount: int = Field(
        strict=True, description="What reaches the provider balance: amount - fee (minor units)"
    )
    customer_id: Id | None = None
    description: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    occurred_at: AwareDatetime | None = None
    recorded_at: AwareDatetime = Field(description="When the ledger recorded it")


class PaymentRefundRecorded(Payload):
    """Event ``payment.refund.recorded.v1``: a refund is in the ledger (a reversing transaction)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_RECORDED,
                    "provider_refund_id": "re_1Q2w",
                    "amount": 500,
                    "refunded_total": 500,
                    "remaining": 1499,
                }
            ]
        }
    )

    transaction_id: Id = Field(description="The refund's ledger transaction")
    payment_transaction_id: Id | None = Field(
        default=None, description="The payment's ledger transaction, which this one reverses"
    )
    provider: ProviderName
    provider_payment_id: Id
    provider_refund_id: Id
    amount: MinorUnits = Field(description="This refund (minor units)")
    currency: Currency
    refunded_total: int = Field(strict=True, ge=0, description="Refunded so far, this included")
    remaining: int = Field(strict=True, ge=0, description="What is left to refund")
    recorded_at: AwareDatetime


ReconciliationClass = Literal[
    "missing_in_ledger", "missing_at_provider", "amount_mismatch", "payout_unbalanced"
]


class ReconciliationCompleted(Payload):
    """Event ``payment.reconciliation.completed.v1``: a settlement report was reconciled."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "report_id": "rec_01HX2J7Q9K",
                    "provider": "stripe",
                    "status": "discrepancies",
                    "lines": 1204,
                    "matched": 1201,
                    "missing_in_ledger": 1,
                    "missing_at_provider": 0,
                    "amount_mismatch": 2,
                    "payouts": 3,
                    "payouts_unbalanced": 0,
                    "completed_at": "2024-05-02T06:00:00Z",
                }
            ]
        }
    )

    report_id: Id
    provider: ProviderName
    status: Literal["balanced", "discrepancies"]
    lines: int = Field(strict=True, ge=0, description="Lines in the report")
    matched: int = Field(strict=True, ge=0)
    missing_in_ledger: int = Field(strict=True, ge=0)
    missing_at_provider: int = Field(strict=True, ge=0)
    amount_mismatch: int = Field(strict=True, ge=0)
    payouts: int = Field(strict=True, ge=0, description="Payouts whose totals were checked")
    payouts_unbalanced: int = Field(strict=True, ge=0)
    period_start: AwareDatetime | None = None
    period_end: AwareDatetime | None = None
    completed_at: AwareDatetime


class ReconciliationMismatch(Payload):
    """Event ``payment.reconciliation.mismatch.v1``: one discrepancy found by a reconciliation."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "report_id": "rec_01HX2J7Q9K",
                    "provider": "stripe",
                    "kind": "amount_mismatch",
                    "source": "pi_3P1x",
                    "line": 17,
                    "line_type": "charge",
                    "currency": "EUR",
                    "provider_amount": 1999,
                    "provider_fee": 59,
                    "provider_net": 1940,
                    "ledger_amount": 1899,
                    "ledger_fee": 59,
                    "ledger_net": 1840,
                    "detail": "amount 1999 at the provider, 1899 in the ledger",
                }
            ]
        }
    )

    report_id: Id
    provider: ProviderName
    kind: ReconciliationClass
    source: Id | None = Field(default=None, description="The provider object id (payment, …)")
    line: int | None = Field(default=None, ge=1, description="Line number in the report")
    line_type: str | None = None
    currency: Currency | None = None
    payout_id: Id | None = None
    provider_amount: SignedMinorUnits | None = None
    provider_fee: SignedMinorUnits | None = None
    provider_net: SignedMinorUnits | None = None
    ledger_amount: SignedMinorUnits | None = None
    ledger_fee: SignedMinorUnits | None = None
    ledger_net: SignedMinorUnits | None = None
    ledger_transaction_id: Id | None = None
    detail: str = Field(min_length=1, description="What does not agree, for humans")
