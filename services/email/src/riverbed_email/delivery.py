"""Handling one ``email.requested.v1``: the steps, in order, and what each outcome publishes.

1. **Already sent?** The send ledger has this request's event id: the relay accepted it
   before and the acknowledgement was lost (a crash, a kill). Nothing is sent; the same
   ``email.sent`` is returned again.
2. **Suppressed?** The address is on the suppression list: nothing is sent,
   ``email.suppressed`` is returned.
3. **Render** the template (or take the raw content). A missing template or variable
   is permanent: ``email.failed`` is published, the request is dead-lettered.
4. **Pace** by recipient domain: wait in-process up to ``EMAIL_RATE_LIMIT_MAX_WAIT_MS``,
   else reschedule the request (``RetryLater``) so the stream keeps flowing.
5. **Send** to the relay, and classify its answer (``riverbed_email.outcomes``):

   - sent: record the send under the event id (``SET NX``, as the send completes),
     return ``email.sent`` (published by the runtime before it acknowledges);
   - retry: slow the domain down on 421/450/451/452, raise so the runtime retries on
     the SMTP schedule; on the last attempt publish ``email.failed`` (not permanent)
     first, and the runtime dead-letters the request as exhausted;
   - reject: suppress the address (when the refusal is about it), publish
     ``email.failed`` (permanent), raise :class:`PermanentError` — dead-lettered.

Why publish ``email.failed`` here rather than return it: the runtime publishes what a
handler *returns* only on success, and dead-letters on ``PermanentError``. Publishing
first, then raising, gives both the event and the dead-letter entry (which operators
replay); a crash between the two is covered by step 2 recognizing its own suppression.

Every outcome event has an id derived from the request's (uuid5), so one published
twice after a crash is the same event, and consumers' idempotency drops the copy.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, NoReturn

import structlog
from redis.exceptions import RedisError

from riverbed.consumer import Message
from riverbed.errors import PermanentError, RetryLater
from riverbed_contracts import CloudEvent
from riverbed_contracts.email import EmailFailed, EmailSent, EmailSuppressed, SendEmail
from riverbed_contracts.payload import Payload
from riverbed_contracts.registry import new_event
from riverbed_email import metrics
from riverbed_email.addresses import DomainLabels, domain_of, normalize
from riverbed_email.compose import OutgoingEmail, Unsubscribe, compose, message_id_for
from riverbed_email.outcomes import Outcome, Verdict, classify
from riverbed_email.ports import (
    DomainThrottle,
    EmailSender,
    Publish,
    SendLedger,
    SentRecord,
    Suppression,
    SuppressionList,
)
from riverbed_email.templates import RenderError, TemplateRenderer

log = structlog.get_logger(__name__)

SOURCE = "urn:riverbed:email"
_OUTCOME_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, SOURCE)

#: s; a marker write that failed right after the relay accepted is retried this often
MARKER_RETRY_DELAYS_S = (0.05, 0.25, 1.0)


def outcome_event_id(request_id: str, kind: Literal["sent", "failed", "suppressed"]) -> str:
    """The id of the one ``kind`` event of a request: the same however often it is made."""
    return str(uuid.uuid5(_OUTCOME_NAMESPACE, f"{request_id}/{kind}"))


class SmtpDeferred(Exception):
    """The relay did not take the message this time; the runtime retries on schedule."""


@dataclass(frozen=True)
class DeliveryPolicy:
    from_address: str
    envelope_sender: str
    message_id_domain: str
    max_attempts: int  # the runtime's max deliveries: the last attempt publishes email.failed
    rate_limit_max_wait_ms: int
    unsubscribe: Unsubscribe | None = None


class Delivery:
    """The ``email.requested`` handler; every dependency is a port, passed in."""

    def __init__(
        self,
        policy: DeliveryPolicy,
        *,
        renderer: TemplateRenderer,
        sender: EmailSender,
        suppressions: SuppressionList,
        ledger: SendLedger,
        throttle: DomainThrottle,
        publish: Publish,
        domain_labels: DomainLabels,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.policy = policy
        self.renderer = renderer
        self.sender = sender
        self.suppressions = suppressions
        self.ledger = ledger
        self.throttle = throttle
        self.publish = publish
        self.label = domain_labels
        self.sleep = sleep

    async def __call__(self, message: Message[SendEmail]) -> list[CloudEvent]:
        domain = domain_of(message.payload.to)
        with structlog.contextvars.bound_contextvars(to_domain=domain):
            return await self._deliver(message, domain)

    async def _deliver(self, message: Message[SendEmail], domain: str) -> list[CloudEvent]:
        label = self.label(domain)
        settled = await self._settled_before(message, label)
        if settled is not None:
            return settled
        email = await self._compose(message, label)
        await self._pace(message, domain, label)

        started = time.perf_counter()
        outcome = classify(await self.sender.send(email))
        metrics.SMTP_SECONDS.labels(outcome.verdict.value).observe(time.perf_counter() - started)
        if outcome.verdict is Verdict.SENT:
            return [await self._accepted(message, email, label, outcome)]
        if outcome.verdict is Verdict.RETRY:
            await self._deferred(message, domain, label, outcome)
        await self._rejected(message, label, outcome)

    # -- before sending ------------------------------------------------------------

    async def _settled_before(
        self, message: Message[SendEmail], label: str
    ) -> list[CloudEvent] | None:
        """Steps 1 and 2: the events to return when nothing is to be sent, else None."""
        event, request = message.event, message.payload
        sent_before = await self.ledger.get(event.id)
        if sent_before is not None:
            metrics.ALREADY_SENT.inc()
            log.info("already accepted by the relay; not sent again")
            return [self._sent(message, sent_before)]

        suppression = await self.suppressions.get(request.to)
        if suppression is None:
            return None
        if suppression.event_id == event.id:
            # this very request was refused and suppressed, and the process died before
            # the runtime dead-lettered it: finish that, rather than report "suppressed"
            await self._give_up(message, suppression.reason, suppression.smtp_code, permanent=True)
            raise PermanentError(suppression.reason)
        metrics.SUPPRESSED.labels(label).inc()
        log.info("address is suppressed; not sent", smtp_code=suppression.smtp_code)
        payload = EmailSuppressed(
            request_id=event.id,
            to=request.to,
            reason=suppression.reason,
            smtp_code=suppression.smtp_code,
        )
        return [self._event(payload, message, "suppressed")]

    async def _compose(self, message: Message[SendEmail], label: str) -> OutgoingEmail:
        """Step 3: render and build the message; a render error is permanent."""
        request = message.payload
        try:
            content = self.renderer.render(request)
        except RenderError as error:
            metrics.FAILED.labels(label, "invalid").inc()
            await self._give_up(message, str(error), None, permanent=True)
            raise PermanentError(str(error)) from None
        return compose(
            content,
            to=request.to,
            from_address=self.policy.from_address,
            envelope_sender=self.policy.envelope_sender,
            message_id=message_id_for(message.event.id, self.policy.message_id_domain),
            date=message.event.time,
            category=request.category,
            unsubscribe=self.policy.unsubscribe,
        )

    async def _pace(self, message: Message[SendEmail], domain: str, label: str) -> None:
        """Step 4: wait briefly for the domain's rate, or reschedule the request."""
        waited_ms = 0
        while (wait_ms := await self.throttle.take(domain)) > 0:
            if waited_ms + wait_ms > self.policy.rate_limit_max_wait_ms:
                metrics.RATE_LIMITED.labels(label, "rescheduled").inc()
                metrics.RETRIED.labels(label, "rate_limited").inc()
                reason = f"rate limit of {domain}: next send in {wait_ms} ms"
                # spread the requests refused together, or they come back together
                delay_ms = wait_ms + int(random.uniform(0, max(wait_ms, 1_000)))
                # nothing was tried: waiting for our own pace must not use up attempts
                # (a burst of 10,000 mails to one domain would dead-letter nearly all)
                raise RetryLater(reason, delay_ms=delay_ms, counts_as_delivery=False)
            metrics.RATE_LIMITED.labels(label, "waited").inc()
            await self.sleep(wait_ms / 1000)
            waited_ms += wait_ms

    # -- outcomes ------------------------------------------------------------------

    async def _accepted(
        self, message: Message[SendEmail], email: OutgoingEmail, label: str, outcome: Outcome
    ) -> CloudEvent:
        record = SentRecord(email.message_id, message.attempt, int(time.time() * 1000))
        await self._record_sent(message.event.id, record)
        metrics.SENT.labels(label).inc()
        log.info("accepted by the relay", smtp_code=outcome.code, message_id=email.message_id)
        return self._sent(message, record)

    async def _record_sent(self, event_id: str, record: SentRecord) -> None:
        """Write the marker; a Redis hiccup now would mean a second send: try a few times."""
        for delay_s in (*MARKER_RETRY_DELAYS_S, None):
            try:
                if not await self.ledger.record(event_id, record):
                    # another consumer held this request at the same time and sent it too
                    log.warning("send already recorded by another consumer: sent twice")
                return
            except (RedisError, OSError) as error:
                if delay_s is None:
                    metrics.UNRECORDED.inc()
                    log.error(
                        "accepted send not recorded; a redelivery would send it again",
                        error=str(error),
                    )
                    return
                await self.sleep(delay_s)

    async def _deferred(
        self, message: Message[SendEmail], domain: str, label: str, outcome: Outcome
    ) -> NoReturn:
        if outcome.slow_down:
            level = await self.throttle.slow_down(domain)
            metrics.SLOWDOWNS.labels(label).inc()
            log.info("domain asked us to slow down", smtp_code=outcome.code, level=level)
        metrics.RETRIED.labels(label, outcome.retry_reason).inc()
        if message.attempt >= self.policy.max_attempts:
            metrics.FAILED.labels(label, "exhausted").inc()
            await self._give_up(message, outcome.reason, outcome.code, permanent=False)
        raise SmtpDeferred(outcome.reason)

    async def _rejected(
        self, message: Message[SendEmail], label: str, outcome: Outcome
    ) -> NoReturn:
        request = message.payload
        if outcome.suppress:
            added = await self.suppressions.add(
                Suppression(
                    address=normalize(request.to),
                    reason=outcome.reason,
                    smtp_code=outcome.code,
                    event_id=message.event.id,
                    at_ms=int(time.time() * 1000),
                )
            )
            if added:
                metrics.SUPPRESSIONS_ADDED.labels(label).inc()
        metrics.FAILED.labels(label, "rejected" if outcome.code else "invalid").inc()
        await self._give_up(message, outcome.reason, outcome.code, permanent=True)
        raise PermanentError(outcome.reason)

    async def _give_up(
        self,
        message: Message[SendEmail],
        reason: str,
        smtp_code: int | None,
        *,
        permanent: bool,
    ) -> None:
        """Publish ``email.failed`` now: the runtime dead-letters after the handler raises."""
        log.warning("giving up on this email", reason=reason, permanent=permanent)
        payload = EmailFailed(
            request_id=message.event.id,
            to=message.payload.to,
            reason=reason,
            permanent=permanent,
            smtp_code=smtp_code,
            attempts=message.attempt,
        )
        await self.publish([self._event(payload, message, "failed")])

    # -- events --------------------------------------------------------------------

    def _sent(self, message: Message[SendEmail], record: SentRecord) -> CloudEvent:
        payload = EmailSent(
            request_id=message.event.id,
            to=message.payload.to,
            message_id=record.message_id,
            attempts=record.attempts,
        )
        return self._event(payload, message, "sent")

    @staticmethod
    def _event(
        payload: Payload,
        message: Message[SendEmail],
        kind: Literal["sent", "failed", "suppressed"],
    ) -> CloudEvent:
        return new_event(
            payload,
            cause=message.event,
            id=outcome_event_id(message.event.id, kind),
            source=SOURCE,
        )
