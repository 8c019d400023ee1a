"""The small interfaces the delivery logic needs; adapters implement them, tests fake them.

- :class:`EmailSender` — hands one message to an SMTP relay (``riverbed_email.smtp``);
- :class:`SuppressionList`, :class:`SendLedger`, :class:`DomainThrottle` — state shared by
  every replica (``riverbed_email.store``, in Redis);
- :class:`SentRecord`, :class:`FailedRecord` — what became of a request, recorded under its
  event id before its outcome event is published, so a redelivery publishes that same event;
- :data:`Publish` — appends events to their streams before the request is settled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from riverbed_contracts import CloudEvent
from riverbed_email.compose import OutgoingEmail
from riverbed_email.outcomes import SmtpResult


class EmailSender(Protocol):
    async def send(self, email: OutgoingEmail) -> SmtpResult:
        """Send ``email`` to its one recipient; report every outcome, never raise for SMTP."""
        ...


@dataclass(frozen=True)
class Suppression:
    address: str  # normalized (see riverbed_email.addresses.normalize)
    reason: str
    smtp_code: int | None = None
    event_id: str | None = None  # the request whose refusal put it there, if any
    at_ms: int = 0  # when, ms since the epoch


class SuppressionList(Protocol):
    async def get(self, address: str) -> Suppression | None: ...

    async def add(self, suppression: Suppression) -> bool:
        """Add unless present (the first reason is kept); True when added."""
        ...

    async def remove(self, address: str) -> bool:
        """True when the address was on the list."""
        ...

    def entries(self) -> AsyncIterator[Suppression]: ...


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


class SendLedger(Protocol):
    """What became of requests, by request event id: accepted by the relay, or given up."""

    async def get(self, event_id: str) -> SentRecord | None: ...

    async def failure(self, event_id: str) -> FailedRecord | None: ...

    async def record_many(
        self, records: Sequence[tuple[str, SentRecord | FailedRecord]]
    ) -> list[bool]:
        """Record each (event id, record) unless its request already has one of that kind,
        in one round trip; per record, True when this call recorded it."""
        ...

    async def hold(self, event_id: str, holder: str, lease_ms: int) -> int:
        """Take (or renew) the lease of sending this request for ``lease_ms``: 0 when
        ``holder`` has it now, else the ms another holder's lease still runs."""
        ...

    async def release(self, event_id: str, holder: str) -> None:
        """Give the lease up, if ``holder`` still has it."""
        ...


class DomainThrottle(Protocol):
    """Pace of sending per recipient domain, shared by every replica."""

    async def take(self, domain: str) -> int:
        """Take one send from ``domain``'s budget: 0, or the ms to wait before asking again."""
        ...

    async def slow_down(self, domain: str) -> int:
        """The domain asked us to slow down; returns its new slow-down level."""
        ...


#: publishes events (validated against their contracts) onto their streams
Publish = Callable[[Sequence[CloudEvent]], Awaitable[object]]
