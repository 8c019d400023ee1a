"""The events this service emits: their deterministic ids, its source, the stream each goes
to. Shared by the use cases that queue events in the outbox (recording, reconciliation)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from riverbed.outbox import OutboxMessage
from riverbed_contracts import CloudEvent, Payload
from riverbed_contracts.registry import get_spec, new_event
from riverbed_payments import SOURCE
from riverbed_payments.domain.ledger import deterministic_id


def own_event(
    payload: Payload,
    *id_parts: str,
    subject: str,
    at: datetime,
    cause: CloudEvent | None = None,
) -> CloudEvent:
    """An event of this service about ``subject``, its id derived from ``id_parts`` so that
    a redelivery or a resumed job emits the very same event (the outbox keeps one)."""
    return new_event(
        payload,
        cause=cause,
        id=deterministic_id(*id_parts),
        source=SOURCE,
        subject=subject,
        time=at,
    )


def routed(event: CloudEvent, stream_for: Callable[[str], str]) -> OutboxMessage:
    """``event`` as an outbox row bound for its stream (after ``stream_for``'s routing)."""
    return OutboxMessage(event, stream_for(get_spec(event.type).stream))
