"""Webhook contracts: the command to deliver one event to one endpoint, and its outcomes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, ConfigDict, Field

from riverbed_contracts.payload import Id, Payload

DeliveryId = Annotated[
    Id, Field(description="Stable across attempts; sent so the receiver can drop duplicates")
]
_EXAMPLE_IDS = {
    "delivery_id": "dlv_01HX2J7Q9K",
    "endpoint_id": "ep_42",
    "event_id": "9b2f0a5e-3c1d-4e8f-a1b2-c3d4e5f60718",
}


class WebhookEvent(Payload):
    """The event a subscriber receives, as it will see it in the request body."""

    id: Id = Field(description="Stable event id; the receiver's idempotency key")
    type: str = Field(min_length=1, description="Event type the subscriber subscribed to")
    time: AwareDatetime | None = Field(default=None, description="When it happened (RFC 3339)")
    data: dict[str, Any]


class DeliverWebhook(Payload):
    """Command ``webhook.delivery.requested.v1``: POST one event to one subscriber endpoint.

    The endpoint (URL, signing secret, retry policy) is owned by the webhooks
    service and looked up by ``endpoint_id``; secrets never travel on streams.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_EXAMPLE_IDS,
                    "event": {
                        "id": _EXAMPLE_IDS["event_id"],
                        "type": "payment.succeeded",
                        "time": "2024-05-01T12:00:00Z",
                        "data": {"amount": 1999, "currency": "EUR"},
                    },
                    "attempt": 1,
                }
            ]
        }
    )

    delivery_id: DeliveryId
    endpoint_id: Id
    event: WebhookEvent
    attempt: int = Field(default=1, ge=1, description="1 for the first try, then 2, 3, ...")


class WebhookDelivered(Payload):
    """Event ``webhook.delivery.succeeded.v1``: the endpoint answered 2xx."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**_EXAMPLE_IDS, "attempt": 2, "status_code": 204, "duration_ms": 87}]
        }
    )

    delivery_id: DeliveryId
    endpoint_id: Id
    event_id: Id
    attempt: int = Field(ge=1, description="The attempt that succeeded")
    status_code: int = Field(ge=200, le=299)
    duration_ms: int = Field(ge=0, description="Request duration (ms)")


class WebhookDeliveryExhausted(Payload):
    """Event ``webhook.delivery.exhausted.v1``: every attempt failed; no more will be made."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_EXAMPLE_IDS,
                    "attempts": 8,
                    "last_status_code": 503,
                    "last_error": "503 Service Unavailable",
                }
            ]
        }
    )

    delivery_id: DeliveryId
    endpoint_id: Id
    event_id: Id
    attempts: int = Field(ge=1)
    last_status_code: int | None = Field(
        default=None, ge=100, le=599, description="Absent when no response came (timeout, DNS)"
    )
    last_error: str = Field(min_length=1, description="What went wrong on the last attempt")


class WebhookEndpointDisabled(Payload):
    """Event ``webhook.endpoint.disabled.v1``: an endpoint gets no more deliveries until enabled.

    ``reason``: ``gone`` (it answered 410 Gone), ``failing`` (it failed without a single
    success for the configured period) or ``manual`` (an operator disabled it).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "endpoint_id": _EXAMPLE_IDS["endpoint_id"],
                    "reason": "failing",
                    "disabled_at": "2024-05-06T12:00:00Z",
                    "failing_since": "2024-05-01T12:00:00Z",
                    "last_status_code": 503,
                    "detail": "no successful delivery for 5 days",
                }
            ]
        }
    )

    endpoint_id: Id
    reason: Literal["gone", "failing", "manual"]
    disabled_at: AwareDatetime
    failing_since: AwareDatetime | None = Field(
        default=None, description="First failure after the last success (reason failing)"
    )
    last_status_code: int | None = Field(
        default=None, ge=100, le=599, description="Status of the last attempt, if it got one"
    )
    detail: str | None = Field(default=None, description="Human-readable explanation")
