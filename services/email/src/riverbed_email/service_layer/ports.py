"""The small interfaces the delivery use case needs; adapters implement them, tests fake them.

- :class:`Renderer` — the request's content, from a template or as given
  (``adapters.templates``);
- :class:`EmailSender` — hands one message to an SMTP relay (``adapters.smtp``);
- :class:`SuppressionList`, :class:`SendLedger`, :class:`DomainThrottle` — state shared by
  every replica (``adapters.redis_stores``, in Redis);
- :class:`OutcomeRecorder` — writes outcome records and keeps those Redis has not taken yet
  (``adapters.records``);
- :data:`Publish` — appends events to their streams before the request is settled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from riverbed_contracts import CloudEvent
from riverbed_contracts.email import SendEmail
from riverbed_email.domain.compose import OutgoingEmail
from riverbed_email.domain.content import Content
from riverbed_email.domain.records import FailedRecord, OutcomeRecord, SentRecord, Suppression
from riverbed_email.domain.smtp_replies import SmtpResult


class Renderer(Protocol):
    def render(self, request: SendEmail) -> Content:
        """The request's content; raises :class:`~riverbed_email.domain.content.RenderError`
        when it cannot be had (no such template, a missing variable)."""
        ...


class EmailSender(Protocol):
    async def send(self, email: OutgoingEmail) -> SmtpResult:
        """Send ``email`` to its one recipient; report every outcome, never raise for SMTP."""
        ...


class SuppressionList(Protocol):
    async def get(self, address: str) -> Suppression | None: ...

    async def add(self, suppression: Suppression) -> bool:
        """Add unless present (the first reason is kept); True when added."""
        ...

    async def remove(self, address: str) -> bool:
        """True when the address was on the list."""
        ...

    def entries(self) -> AsyncIterator[Suppression]: ...


class SendLedger(Protocol):
    """What became of requests, by request event id: accepted by the relay, or given up."""

    async def get(self, event_id: str) -> SentRecord | None: ...

    async def failure(self, event_id: str) -> FailedRecord | None: ...

    async def record_many(self, records: Sequence[tuple[str, OutcomeRecord]]) -> list[bool]:
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


class OutcomeRecorder(Protocol):
    """Outcome records on their way to the ledger: never forgotten by this process."""

    def unwritten(self, event_id: str) -> OutcomeRecord | None:
        """The record of this request made in this process and not yet stored, if any."""
        ...

    async def written(self, event_id: str) -> None:
        """Return once this request's record (if one is waiting here) is stored."""
        ...

    async def record(
        self, event_id: str, record: OutcomeRecord, *, since: float | None = None
    ) -> None:
        """Store ``record`` under ``event_id``; return once it is stored. ``since``:
        ``time.perf_counter()`` when the outcome was decided."""
        ...

    async def close(self) -> list[str]:
        """Stop writing; the request ids whose record was never stored."""
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
