"""The small interfaces the delivery logic needs; adapters implement them, tests fake them.

- :class:`EmailSender` — hands one message to an SMTP relay (``riverbed_email.smtp``);
- :class:`SuppressionList`, :class:`SendLedger`, :class:`DomainThrottle` — state shared by
  every replica (``riverbed_email.store``, in Redis);
- :data:`Publish` — appends events to their streams before the request is settled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

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


class SendLedger(Protocol):
    """Which requests the relay accepted, by request event id."""

    async def get(self, event_id: str) -> SentRecord | None: ...

    async def record(self, event_id: str, record: SentRecord) -> bool:
        """Record unless already recorded; True when this call recorded it."""
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
