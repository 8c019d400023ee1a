"""Riverbed's shared contracts: the event envelope, versioned payloads, the registry."""

from riverbed_contracts.email import EmailFailed, EmailSent, SendEmail
from riverbed_contracts.envelope import (
    ENTRY_FIELD,
    MAX_JSON_DEPTH,
    CloudEvent,
    EntryDecodeError,
    event_from_entry,
    event_from_json,
    nested_deeper_than,
    new_event_id,
)
from riverbed_contracts.payload import Payload
from riverbed_contracts.payments import PaymentFailed, PaymentRefunded, PaymentSucceeded
from riverbed_contracts.registry import (
    REGISTRY,
    STREAMS,
    EventSpec,
    UnknownEventType,
    get_spec,
    new_event,
    spec_for,
    validate_data,
)
from riverbed_contracts.webhooks import (
    DeliverWebhook,
    WebhookDelivered,
    WebhookDeliveryExhausted,
    WebhookEvent,
)

__all__ = [
    "ENTRY_FIELD",
    "MAX_JSON_DEPTH",
    "REGISTRY",
    "STREAMS",
    "CloudEvent",
    "DeliverWebhook",
    "EmailFailed",
    "EmailSent",
    "EntryDecodeError",
    "EventSpec",
    "Payload",
    "PaymentFailed",
    "PaymentRefunded",
    "PaymentSucceeded",
    "SendEmail",
    "UnknownEventType",
    "WebhookDelivered",
    "WebhookDeliveryExhausted",
    "WebhookEvent",
    "event_from_entry",
    "event_from_json",
    "get_spec",
    "nested_deeper_than",
    "new_event",
    "new_event_id",
    "spec_for",
    "validate_data",
]
