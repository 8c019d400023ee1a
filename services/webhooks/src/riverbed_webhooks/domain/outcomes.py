"""The events reporting what became of a delivery or an endpoint, with deterministic ids.

Each outcome event's id is a UUID5 of the fact it reports, never random: the same fact
always has the same id. That is what lets the service queue an outcome in its outbox in
the same transaction as the record of it, and a redelivered task (or a relay that
appends a batch twice) repeat it safely — the outbox keeps one row per event id and
consumers drop a repeated id.

=================================  ==========================================================
event                              the fact (what its id is derived from)
=================================  ==========================================================
``webhook.delivery.succeeded.v1``  delivery D succeeded in task T (D, T): a task ends at its
                                   first success, a replay is a new task
``webhook.delivery.exhausted.v1``  task T used up its schedule (T), as before
``webhook.endpoint.disabled.v1``   endpoint E was disabled at time A (E, A in UTC), as before
=================================  ==========================================================
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from riverbed_contracts import CloudEvent, DeliverWebhook, WebhookDelivered
from riverbed_contracts.registry import new_event
from riverbed_contracts.webhooks import WebhookDeliveryExhausted, WebhookEndpointDisabled
from riverbed_webhooks import SOURCE
from riverbed_webhooks.domain.matching import ID_NAMESPACE
from riverbed_webhooks.domain.model import DisabledReason


def succeeded_event_id(delivery_id: str, task_id: str) -> str:
    """CloudEvent id of "delivery ``delivery_id`` succeeded in task ``task_id``"."""
    return str(uuid.uuid5(ID_NAMESPACE, f"succeeded\n{delivery_id}\n{task_id}"))


def exhausted_event_id(task_id: str) -> str:
    """CloudEvent id of "task ``task_id`` failed every attempt of its schedule"."""
    return str(uuid.uuid5(ID_NAMESPACE, f"exhausted\n{task_id}"))


def disabled_event_id(endpoint_id: str, disabled_at: datetime) -> str:
    """CloudEvent id of "endpoint ``endpoint_id`` was disabled at ``disabled_at``" (one
    disabling: the endpoint must be enabled again before it can be disabled again)."""
    moment = disabled_at.astimezone(UTC).isoformat()
    return str(uuid.uuid5(ID_NAMESPACE, f"disabled\n{endpoint_id}\n{moment}"))


def delivery_succeeded(
    delivered: WebhookDelivered, *, task_id: str, cause: CloudEvent | None
) -> CloudEvent:
    event_id = succeeded_event_id(delivered.delivery_id, task_id)
    return _delivery_outcome(delivered, event_id, cause)


def delivery_exhausted(
    exhausted: WebhookDeliveryExhausted, *, task_id: str, cause: CloudEvent | None
) -> CloudEvent:
    return _delivery_outcome(exhausted, exhausted_event_id(task_id), cause)


def _delivery_outcome(
    payload: WebhookDelivered | WebhookDeliveryExhausted, event_id: str, cause: CloudEvent | None
) -> CloudEvent:
    """A delivery's outcome event: its deterministic id, about its endpoint (the subject)."""
    return new_event(payload, cause=cause, id=event_id, source=SOURCE, subject=payload.endpoint_id)


def exhausted_report(
    task: DeliverWebhook,
    *,
    task_id: str,
    cause: CloudEvent | None,
    attempts: int,
    last_error: str,
    last_status_code: int | None = None,
) -> CloudEvent:
    """The report that ``task`` gave up after ``attempts`` attempts (``last_error``, cut
    to 2000 characters, says why the last one failed)."""
    exhausted = WebhookDeliveryExhausted(
        delivery_id=task.delivery_id,
        endpoint_id=task.endpoint_id,
        event_id=task.event.id,
        attempts=attempts,
        last_status_code=last_status_code,
        last_error=last_error[:2000] or "failed",
    )
    return delivery_exhausted(exhausted, task_id=task_id, cause=cause)


def endpoint_disabled(
    endpoint_id: str,
    reason: DisabledReason,
    disabled_at: datetime,
    *,
    cause: CloudEvent | None = None,
    failing_since: datetime | None = None,
    last_status_code: int | None = None,
    detail: str | None = None,
) -> CloudEvent:
    payload = WebhookEndpointDisabled(
        endpoint_id=endpoint_id,
        reason=reason.value,
        disabled_at=disabled_at,
        failing_since=failing_since,
        last_status_code=last_status_code,
        detail=detail,
    )
    return new_event(
        payload,
        cause=cause,
        id=disabled_event_id(endpoint_id, disabled_at),
        source=SOURCE,
        subject=endpoint_id,
    )
