"""Providers' payment events (Stripe's shape) normalised into the payment contracts.

Accepted payload, modelled on Stripe's event object (unknown fields are ignored)::

    {
      "id": "evt_1Q…",                 # the provider's event id: the dedup key
      "type": "payment_intent.succeeded",
      "created": 1718000000,           # unix s; becomes the event's time and occurred_at
      "data": {"object": {…}}          # the object the event is about, by type
    }

What ``data.object`` must hold, by ``type`` (*italics*: optional):

- ``payment_intent.succeeded`` -> ``payment.succeeded.v1``. A PaymentIntent: ``id``,
  ``amount``, ``currency``, *amount_received* (used instead of ``amount`` when > 0),
  *customer*, *description*, *metadata* (string values).
- ``payment_intent.payment_failed`` -> ``payment.failed.v1``. A PaymentIntent: ``id``,
  ``amount``, ``currency``, ``last_payment_error`` with at least one of ``code``,
  ``decline_code``, ``type`` (the first present is the failure code), and *message*.
- ``charge.refunded`` -> ``payment.refunded.v1``. A Charge: ``id``, ``currency``,
  *payment_intent* (the payment's id; the charge's id when absent) and ``refunds.data``,
  newest first: ``data[0]`` is the refund this event reports (``id``, ``amount``,
  *reason*). Stripe API versions from 2022-11-15 leave ``refunds`` out unless expanded.

Amounts are integer minor units (strictly; ``10.5`` is refused) and currencies three
letters, lowercase as Stripe sends them, published uppercase. Any other ``type`` is
answered ``200 {"status": "ignored"}`` and counted: a provider retries every non-2xx
for days, and an event the gateway does not map will never become mappable.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Final, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from riverbed.errors import RiverbedError
from riverbed.problems import field_errors
from riverbed_contracts.payload import Id
from riverbed_contracts.payments import (
    MinorUnits,
    PaymentFailed,
    PaymentRefunded,
    PaymentSucceeded,
    ProviderName,
    ProviderPayment,
)
from riverbed_gateway.settings import GatewaySettings

#: CloudEvent ids of inbound events: uuid5(this, "<provider>\n<provider event id>")
INBOUND_EVENT_NAMESPACE: Final = uuid.UUID("dafaca80-72fd-4c16-b756-04076c0f63ca")
#: 9999-12-31T23:59:59Z in unix s: the last second a four-digit year (RFC 3339) can name
LAST_UNIX_SECOND: Final = 253_402_300_799

Letters3 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$")]


class _ProviderModel(BaseModel):
    """The provider's shapes: only what is read is declared, the rest is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class ProviderEventType(_ProviderModel):
    type: str = Field(min_length=1)


class ProviderEventData(_ProviderModel):
    object: dict[str, Any]


class TimeOutOfRange(RiverbedError, ValueError):
    """A provider's ``created`` past :data:`LAST_UNIX_SECOND`: no datetime holds it."""


class ProviderEvent(_ProviderModel):
    id: Id
    type: str = Field(min_length=1)
    created: int = Field(strict=True, ge=0)
    data: ProviderEventData

    @property
    def occurred_at(self) -> datetime:
        if self.created > LAST_UNIX_SECOND:
            raise TimeOutOfRange(f"created {self.created} is past 9999-12-31T23:59:59Z")
        return datetime.fromtimestamp(self.created, UTC)


class PaymentIntent(_ProviderModel):
    id: Id
    amount: MinorUnits
    amount_received: int | None = Field(default=None, strict=True, ge=0)
    currency: Letters3
    customer: Id | None = None
    description: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class PaymentError(_ProviderModel):
    code: str | None = None
    decline_code: str | None = None
    type: str | None = None
    message: str | None = None

    @model_validator(mode="after")
    def _has_a_code(self) -> PaymentError:
        if not self.failure_code:
            raise ValueError("needs one of 'code', 'decline_code' or 'type'")
        return self

    @property
    def failure_code(self) -> str | None:
        return self.code or self.decline_code or self.type


class FailedPaymentIntent(PaymentIntent):
    last_payment_error: PaymentError


class Refund(_ProviderModel):
    id: Id
    amount: MinorUnits
    reason: str | None = None


class RefundList(_ProviderModel):
    data: list[Refund] = Field(min_length=1)


class Charge(_ProviderModel):
    id: Id
    currency: Letters3
    payment_intent: Id | None = None
    refunds: RefundList


class NotNormalizable(RiverbedError, ValueError):
    """The provider's event lacks what its payment event needs (``errors``: field errors)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} field error(s)")
        self.errors = errors


_M = TypeVar("_M", bound=BaseModel)


def _read(model: type[_M], document: Any, at: tuple[str | int, ...] = ()) -> _M:
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise NotNormalizable(field_errors(list(error.errors()), at)) from None


def _succeeded(provider: str, event: ProviderEvent) -> ProviderPayment:
    intent = _read(PaymentIntent, event.data.object, ("data", "object"))
    return PaymentSucceeded(
        provider=provider,
        provider_payment_id=intent.id,
        amount=intent.amount_received or intent.amount,
        currency=intent.currency.upper(),
        occurred_at=event.occurred_at,
        customer_id=intent.customer,
        description=intent.description,
        metadata=intent.metadata,
    )


def _failed(provider: str, event: ProviderEvent) -> ProviderPayment:
    intent = _read(FailedPaymentIntent, event.data.object, ("data", "object"))
    error = intent.last_payment_error
    assert error.failure_code is not None  # PaymentError's validator
    return PaymentFailed(
        provider=provider,
        provider_payment_id=intent.id,
        amount=intent.amount,
        currency=intent.currency.upper(),
        occurred_at=event.occurred_at,
        failure_code=error.failure_code,
        failure_message=error.message,
    )


def _refunded(provider: str, event: ProviderEvent) -> ProviderPayment:
    charge = _read(Charge, event.data.object, ("data", "object"))
    refund = charge.refunds.data[0]  # newest first: the refund this event reports
    return PaymentRefunded(
        provider=provider,
        provider_payment_id=charge.payment_intent or charge.id,
        amount=refund.amount,
        currency=charge.currency.upper(),
        occurred_at=event.occurred_at,
        provider_refund_id=refund.id,
        reason=refund.reason,
    )


#: provider event type -> its normalizer; every other type is ignored
NORMALIZERS: Final[Mapping[str, Callable[[str, ProviderEvent], ProviderPayment]]] = {
    "payment_intent.succeeded": _succeeded,
    "payment_intent.payment_failed": _failed,
    "charge.refunded": _refunded,
}


def normalize(provider: str, document: Any) -> tuple[ProviderEvent, ProviderPayment] | None:
    """The provider's event and the payment it reports; None for a type that is not mapped.

    Raises :class:`NotNormalizable` when the event lacks what its payment needs.
    """
    event_type = _read(ProviderEventType, document).type
    normalizer = NORMALIZERS.get(event_type)
    if normalizer is None:
        return None
    event = _read(ProviderEvent, document)
    try:
        return event, normalizer(provider, event)
    except ValidationError as error:  # the contract refused what the provider models let by
        raise NotNormalizable(field_errors(list(error.errors()), ("payment",))) from None


def event_id(provider: str, provider_event_id: str) -> str:
    """The CloudEvent id of a provider's event: the same on every delivery and retry."""
    return str(uuid.uuid5(INBOUND_EVENT_NAMESPACE, f"{provider}\n{provider_event_id}"))


_PROVIDER_NAME: Final = TypeAdapter(ProviderName)


class InboundConfigurationError(RiverbedError, ValueError):
    """A provider in ``GATEWAY_INBOUND_SECRETS`` the gateway cannot serve: it refuses to
    start."""


def provider_secrets(settings: GatewaySettings) -> dict[str, tuple[bytes, ...]]:
    """Provider -> its signing secrets, from ``GATEWAY_INBOUND_SECRETS``, checked: a name
    the payment contracts accept, and at least one secret."""
    checked: dict[str, tuple[bytes, ...]] = {}
    for provider, secrets in settings.inbound_secrets.items():
        try:
            _PROVIDER_NAME.validate_python(provider)
        except ValidationError:
            raise InboundConfigurationError(
                f"inbound provider {provider!r}: names are lowercase letters, digits, "
                "'_' and '-', starting with a letter, at most 50 characters"
            ) from None
        if not secrets:
            raise InboundConfigurationError(f"inbound provider {provider!r} has no signing secret")
        checked[provider] = tuple(s.get_secret_value().encode() for s in secrets)
    return checked
