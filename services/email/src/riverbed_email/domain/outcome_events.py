"""The events that report what became of a request: ``email.sent``, ``email.failed``,
``email.suppressed``.

Every outcome event has an id derived from the request's (uuid5) and, when it comes from a
record, the record's time: made twice, it is the same event, and consumers' idempotency
drops the copy.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from riverbed_contracts import CloudEvent
from riverbed_contracts.email import EmailFailed, EmailSent, EmailSuppressed
from riverbed_contracts.payload import Payload
from riverbed_contracts.registry import new_event
from riverbed_email.domain.records import FailedRecord, SentRecord, Suppression
from riverbed_email.domain.request import EmailRequest

SOURCE = "urn:riverbed:email"
_OUTCOME_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, SOURCE)

OutcomeKind = Literal["sent", "failed", "suppressed"]


def outcome_event_id(request_id: str, kind: OutcomeKind) -> str:
    """The id of the one ``kind`` event of a request: the same however often it is made."""
    return str(uuid.uuid5(_OUTCOME_NAMESPACE, f"{request_id}/{kind}"))


def sent_event(request: EmailRequest, record: SentRecord) -> CloudEvent:
    payload = EmailSent(
        request_id=request.id,
        to=request.to,
        message_id=record.message_id,
        attempts=record.attempts,
    )
    return _outcome_event(payload, request, "sent", at_ms=record.at_ms)


def failed_event(request: EmailRequest, record: FailedRecord) -> CloudEvent:
    payload = EmailFailed(
        request_id=request.id,
        to=request.to,
        reason=record.reason,
        permanent=record.permanent,
        smtp_code=record.smtp_code,
        attempts=record.attempts,
    )
    return _outcome_event(payload, request, "failed", at_ms=record.at_ms)


def suppressed_event(request: EmailRequest, suppression: Suppression) -> CloudEvent:
    payload = EmailSuppressed(
        request_id=request.id,
        to=request.to,
        reason=suppression.reason,
        smtp_code=suppression.smtp_code,
    )
    return _outcome_event(payload, request, "suppressed")


def _outcome_event(
    payload: Payload, request: EmailRequest, kind: OutcomeKind, *, at_ms: int = 0
) -> CloudEvent:
    """The outcome event; from a record, with the record's time, so that publishing it
    again publishes the very same event."""
    attributes: dict[str, Any] = {}
    if at_ms > 0:
        attributes["time"] = datetime.fromtimestamp(at_ms / 1000, UTC)
    return new_event(
        payload,
        cause=request.event,
        id=outcome_event_id(request.id, kind),
        source=SOURCE,
        **attributes,
    )
