"""Payment contracts: what a payment provider reported, in integer minor units."""

from __future__ import annotations

from typing import Annotated

from pydantic import AwareDatetime, ConfigDict, Field, StringConstraints

from riverbed_contracts.payload import Id, Payload

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
    occurred_at: AwareDatetime | None = Field(
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
