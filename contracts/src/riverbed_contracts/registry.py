"""Every event type Riverbed knows: its payload model, its stream, what it means.

Type names are ``<stream>.v<N>``: ``email.requested.v1`` travels on the logical
stream ``email.requested``. A new version of a type goes on the same stream, so
consumers dispatch on ``type`` and can handle v1 and v2 side by side.
"""

from __future__ import annotations

import builtins
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

from riverbed_contracts.email import EmailFailed, EmailSent, EmailSuppressed, SendEmail
from riverbed_contracts.envelope import CloudEvent
from riverbed_contracts.payload import Payload
from riverbed_contracts.payments import (
    PaymentDisputeClosed,
    PaymentDisputeOpened,
    PaymentFailed,
    PaymentRecorded,
    PaymentRefunded,
    PaymentRefundRecorded,
    PaymentSucceeded,
    PayoutPaid,
    ReconciliationCompleted,
    ReconciliationMismatch,
)
from riverbed_contracts.webhooks import (
    DeliverWebhook,
    WebhookDelivered,
    WebhookDeliveryExhausted,
    WebhookEndpointDisabled,
)

TYPE_NAME: Final = re.compile(
    r"^(?P<stream>[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+)\.v(?P<version>[1-9][0-9]*)$"
)


#: who may put an event of a type on its stream:
#: ``public``   upstream systems, through the gateway's ``POST /v1/events`` (and the services
#:              named in ``producers``);
#: ``provider`` only the gateway's inbound provider webhooks (signature-checked), and the
#:              services named in ``producers``;
#: ``internal`` only the services named in ``producers``: the gateway refuses it (403) and
#:              consumers drop an event of it whose ``source`` is not one of theirs.
Access = Literal["public", "provider", "internal"]


def service_source(service: str) -> str:
    """The CloudEvents ``source`` a Riverbed service writes its events with."""
    return f"urn:riverbed:{service}"


#: the ``source`` prefix of events the gateway's inbound provider webhooks produce
PROVIDER_SOURCE_PREFIX: Final = "urn:riverbed:inbound:"


@dataclass(frozen=True)
class EventSpec:
    """One versioned event type. ``kind``: a command asks for work, an event reports a fact.

    ``access`` and ``producers`` say who may produce it; ``consumers`` which services read
    its stream (the AsyncAPI document's operations come from both).
    """

    type: str
    model: builtins.type[Payload]  # `type` is the attribute above
    kind: Literal["command", "event"]
    description: str
    access: Access = "internal"
    producers: tuple[str, ...] = ()  # services that publish it
    consumers: tuple[str, ...] = ()  # services that consume its stream

    def trusts_source(self, source: str) -> bool:
        """May an event of this type come from ``source``? Public types: from anyone the
        gateway let in; provider types: the inbound webhooks or a producer service;
        internal types: a producer service only."""
        if self.access == "public":
            return True
        if self.access == "provider" and source.startswith(PROVIDER_SOURCE_PREFIX):
            return True
        return source in self._producer_sources

    @functools.cached_property
    def _producer_sources(self) -> frozenset[str]:
        # built once: the consumer asks for every message it handles
        return frozenset(service_source(service) for service in self.producers)

    def __post_init__(self) -> None:
        if not TYPE_NAME.match(self.type):
            raise ValueError(
                f"invalid event type name {self.type!r}: use '<stream>.v<N>', "
                "e.g. 'email.requested.v1' (lowercase dotted stream name, version from 1)"
            )

    @property
    def stream(self) -> str:
        """The logical stream this type travels on (``email.requested``)."""
        return self.type.rsplit(".", 1)[0]

    @property
    def version(self) -> int:
        return int(self.type.rsplit(".v", 1)[1])


class UnknownEventType(ValueError):
    """An event type no spec is registered for (permanent: retrying cannot help)."""

    def __init__(self, type: str) -> None:
        self.type = type
        super().__init__(f"unknown event type {type!r}; known types: {', '.join(REGISTRY)}")


_SPECS = (
    EventSpec(
        "email.requested.v1",
        SendEmail,
        "command",
        "Send one email, from a template or as raw subject and text.",
        access="public",
        producers=("payments",),  # receipts
        consumers=("email",),
    ),
    EventSpec(
        "email.sent.v1",
        EmailSent,
        "event",
        "The SMTP server accepted an email.",
        producers=("email",),
    ),
    EventSpec(
        "email.failed.v1",
        EmailFailed,
        "event",
        "An email will not be sent: refused, or out of retries.",
        producers=("email",),
    ),
    EventSpec(
        "email.suppressed.v1",
        EmailSuppressed,
        "event",
        "An email was not sent: its address is on the suppression list.",
        producers=("email",),
    ),
    EventSpec(
        "webhook.delivery.requested.v1",
        DeliverWebhook,
        "command",
        "Deliver one event to one subscriber endpoint (signed HTTP POST).",
        producers=("webhooks",),
        consumers=("webhooks",),
    ),
    EventSpec(
        "webhook.delivery.succeeded.v1",
        WebhookDelivered,
        "event",
        "A subscriber endpoint answered 2xx to a delivery.",
        producers=("webhooks",),
    ),
    EventSpec(
        "webhook.delivery.exhausted.v1",
        WebhookDeliveryExhausted,
        "event",
        "Every attempt of a delivery failed; no more will be made.",
        producers=("webhooks",),
    ),
    EventSpec(
        "webhook.endpoint.disabled.v1",
        WebhookEndpointDisabled,
        "event",
        "A subscriber endpoint was disabled (410 Gone, failing too long, or by an operator).",
        producers=("webhooks",),
    ),
    # Payment facts come from a payment backend posting them (public: give such a key
    # only the payment.* scopes it needs) or from a provider's signed webhook (inbound).
    EventSpec(
        "payment.succeeded.v1",
        PaymentSucceeded,
        "event",
        "A payment provider captured a payment.",
        access="public",
        consumers=("payments", "webhooks"),
    ),
    EventSpec(
        "payment.failed.v1",
        PaymentFailed,
        "event",
        "A payment provider declined or could not complete a payment.",
        access="public",
        consumers=("payments", "webhooks"),
    ),
    EventSpec(
        "payment.refunded.v1",
        PaymentRefunded,
        "event",
        "A payment provider refunded (part of) a payment.",
        access="public",
        consumers=("payments", "webhooks"),
    ),
    EventSpec(
        "payment.dispute.opened.v1",
        PaymentDisputeOpened,
        "event",
        "A customer disputed a payment; the provider withdrew the disputed funds.",
        access="public",
        consumers=("payments",),
    ),
    EventSpec(
        "payment.dispute.closed.v1",
        PaymentDisputeClosed,
        "event",
        "A dispute was decided: won (funds reinstated) or lost.",
        access="public",
        consumers=("payments",),
    ),
    EventSpec(
        "payment.payout.paid.v1",
        PayoutPaid,
        "event",
        "A payment provider paid part of the balance out to the bank.",
        access="public",
        consumers=("payments",),
    ),
    # the ledger's own facts: merchants receive them as signed confirmations, so nobody
    # but the payments service may write them
    EventSpec(
        "payment.recorded.v1",
        PaymentRecorded,
        "event",
        "The payments ledger recorded a captured payment (once per payment).",
        producers=("payments",),
        consumers=("webhooks",),
    ),
    EventSpec(
        "payment.refund.recorded.v1",
        PaymentRefundRecorded,
        "event",
        "The payments ledger recorded a refund as a reversing transaction.",
        producers=("payments",),
        consumers=("webhooks",),
    ),
    EventSpec(
        "payment.reconciliation.completed.v1",
        ReconciliationCompleted,
        "event",
        "A settlement report was reconciled against the ledger.",
        producers=("payments",),
    ),
    EventSpec(
        "payment.reconciliation.mismatch.v1",
        ReconciliationMismatch,
        "event",
        "One discrepancy a reconciliation found between a settlement report and the ledger.",
        producers=("payments",),
    ),
)

#: event type -> its spec, in a stable order (sorted by type)
REGISTRY: Final[Mapping[str, EventSpec]] = MappingProxyType(
    {spec.type: spec for spec in sorted(_SPECS, key=lambda spec: spec.type)}
)
#: every logical stream, sorted
STREAMS: Final[tuple[str, ...]] = tuple(sorted({spec.stream for spec in _SPECS}))
_BY_MODEL: Final[Mapping[type[Payload], EventSpec]] = MappingProxyType(
    {spec.model: spec for spec in _SPECS}
)
if not len(REGISTRY) == len(_BY_MODEL) == len(_SPECS):
    raise RuntimeError("an event type or payload model is registered twice")


def get_spec(type: str) -> EventSpec:
    """The spec of ``type``; :class:`UnknownEventType` names the known types otherwise."""
    try:
        return REGISTRY[type]
    except KeyError:
        raise UnknownEventType(type) from None


#: short alias of get_spec
get = get_spec


def spec_for(model: type[Payload]) -> EventSpec:
    """The spec whose payload model is ``model``."""
    try:
        return _BY_MODEL[model]
    except KeyError:
        raise LookupError(f"{model.__name__} is not a registered payload model") from None


def validate_data(event: CloudEvent) -> Payload:
    """The typed payload of ``event``; raises ``pydantic.ValidationError`` when it does not fit."""
    return get_spec(event.type).model.model_validate(event.data)


def new_event(
    payload: Payload, *, cause: CloudEvent | None = None, **attributes: Any
) -> CloudEvent:
    """The event carrying ``payload`` (its type from the registry).

    With ``cause``, it continues the cause's correlation (see ``CloudEvent.caused``).
    Absent optional fields are left out of ``data`` rather than sent as null.
    """
    spec = spec_for(type(payload))
    data = payload.model_dump(mode="json", exclude_none=True)
    if cause is not None:
        return cause.caused(spec.type, data, **attributes)
    return CloudEvent(type=spec.type, data=data, **attributes)
