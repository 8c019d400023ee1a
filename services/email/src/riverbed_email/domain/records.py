"""What is remembered about addresses and requests, whatever stores it.

- :class:`Suppression` — an address not to be sent to again, and why;
- :class:`SentRecord`, :class:`FailedRecord` — what became of a request, recorded under its
  event id before its outcome event is published, so a redelivery publishes that same
  event instead of acting on the request again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Suppression:
    address: str  # normalized (see riverbed_email.domain.addresses.normalize)
    reason: str
    smtp_code: int | None = None
    event_id: str | None = None  # the request whose refusal put it there, if any
    at_ms: int = 0  # when, ms since the epoch


@dataclass(frozen=True)
class SentRecord:
    message_id: str
    attempts: int
    at_ms: int  # ms since the epoch


#: why a request was given up: the relay refused it, every attempt was deferred, or the
#: request itself cannot be sent (template, variable, address); the metric's reason label
FailureKind = Literal["rejected", "exhausted", "invalid"]


@dataclass(frozen=True)
class FailedRecord:
    """A request given up: the content of its ``email.failed``, as first decided."""

    kind: FailureKind
    reason: str
    permanent: bool
    smtp_code: int | None
    attempts: int
    at_ms: int  # ms since the epoch


#: either record of a request's outcome
OutcomeRecord = SentRecord | FailedRecord
