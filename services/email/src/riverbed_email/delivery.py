"""Handling one ``email.requested.v1``: the steps, in order, and what each outcome publishes.

1. **Settled before?** The request's outcome was recorded by an earlier delivery — the
   relay accepted it (the sent marker), or it was given up (the failure record) — and
   that delivery ended before its entry was acknowledged (a crash, a kill, Redis away).
   Nothing is sent; the same ``email.sent`` (or ``email.failed``, then the dead letter)
   is published again. A record made in this process that Redis has not taken yet counts
   too (``riverbed_email.records``), and is waited for.
2. **Suppressed?** The address is on the suppression list: nothing is sent,
   ``email.suppressed`` is published.
3. **Hold** the request: take its sending lease (``EMAIL_SEND_LEASE_S``), released once
   the outcome is recorded. Held by another replica — which may have the relay's 250 and
   not yet its marker, say after a Redis outage, when every heartbeat looks stale and a
   sibling takes the entry over — nothing is sent: look again in a few seconds
   (``RetryLater``, not an attempt).
4. **Out of attempts?** A delivery past ``EMAIL_MAX_ATTEMPTS`` means the last attempt
   never completed: give up now (below), without trying the relay again.
5. **Render** the template (or take the raw content). A missing template or variable
   is permanent: given up.
6. **Pace** by recipient domain: wait in-process up to ``EMAIL_RATE_LIMIT_MAX_WAIT_MS``,
   else reschedule the request (``RetryLater``) so the stream keeps flowing.
7. **Send** to the relay, and classify its answer (``riverbed_email.outcomes``):

   - sent: record the send under the event id before anything else, and return only
     once Redis has the record; then publish ``email.sent``;
   - retry: slow the domain down on 421/450/451/452, raise so the runtime retries on
     the SMTP schedule; on the last attempt give up (not permanent);
   - reject: suppress the address (when the refusal is about it), give up (permanent).

Giving up is: record the failure under the event id, publish ``email.failed``, raise a
:class:`PermanentError` (:class:`AttemptsExhausted` when out of attempts) so the runtime
dead-letters the request. Record, then publish: whatever interrupts the handler between
the two (a crash, Redis away, a timeout), the redelivery finds the record and publishes
the same event. The handler publishes every outcome itself, retrying while Redis is
away, and returns nothing for the runtime to publish: it never ends, successfully, before
its outcome event is out.

Every outcome event has an id derived from the request's (uuid5) and, when it comes from a
record, the record's time: published twice, it is the same event, and consumers'
idempotency drops the copy.

The service counts attempts itself: the runtime's limit is ``EMAIL_MAX_ATTEMPTS`` plus
:data:`GRACE_DELIVERIES` (``riverbed_email.bootstrap``), so a last attempt that crashed or
timed out is delivered once more, here, instead of being dead-lettered without an outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn

import structlog
from redis.exceptions import RedisError

from riverbed.consumer import Message
from riverbed.errors import PermanentError, RetryLater
from riverbed.eventloop import raise_if_cancelled
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
    FailedRecord,
    Publish,
    SendLedger,
    SentRecord,
    Suppression,
    SuppressionList,
)
from riverbed_email.records import Recorder
from riverbed_email.templates import RenderError, TemplateRenderer

log = structlog.get_logger(__name__)

SOURCE = "urn:riverbed:email"
_OUTCOME_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, SOURCE)

#: deliveries the runtime allows past EMAIL_MAX_ATTEMPTS: a last attempt cut off by a crash,
#: a timeout or Redis being away is delivered again and gives up with email.failed; only a
#: request that keeps killing its handler this many more times is dead-lettered without one
GRACE_DELIVERIES = 3

#: s; first and longest pause between two tries to publish an outcome while Redis is away
PUBLISH_FIRST_RETRY_S = 0.05
PUBLISH_LONGEST_RETRY_S = 1.0

#: ms; a request another replica holds is looked at again this often (at most), so its
#: outcome is published soon after that replica records it, or sent soon after its lease
#: runs out when that replica died
HELD_ELSEWHERE_RECHECK_MS = 5_000

#: s; longest wait for giving the lease up: best effort, it runs out by itself anyway
RELEASE_TIMEOUT_S = 1.0


def outcome_event_id(request_id: str, kind: Literal["sent", "failed", "suppressed"]) -> str:
    """The id of the one ``kind`` event of a request: the same however often it is made."""
    return str(uuid.uuid5(_OUTCOME_NAMESPACE, f"{request_id}/{kind}"))


class SmtpDeferred(Exception):
    """The relay did not take the message this time; the runtime retries on schedule."""


class AttemptsExhausted(PermanentError):
    """Every attempt was deferred, or the last one never completed: given up.

    Permanent for the runtime (dead-lettered at once, reason ``permanent``, error type
    ``AttemptsExhausted``): the email service counts its attempts itself.
    """


@dataclass(frozen=True)
class DeliveryPolicy:
    from_address: str
    envelope_sender: str
    message_id_domain: str
    max_attempts: int  # EMAIL_MAX_ATTEMPTS: the last attempt gives up with email.failed
    rate_limit_max_wait_ms: int
    unsubscribe: Unsubscribe | None = None
    send_lease_ms: int = 300_000  # EMAIL_SEND_LEASE_S, in ms


class _OneAtATime:
    """Deliveries of one request in this process run one after the other.

    Two entries of one request can be in hand at once (the same event published twice, a
    dead-letter replay next to a pending retry): the second then sees what the first
    decided instead of sending alongside it.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def __call__(self, event_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(event_id, (asyncio.Lock(), 0))
        self._locks[event_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[event_id]
            if users == 1:
                del self._locks[event_id]
            else:
                self._locks[event_id] = (lock, users - 1)


def _error_of(record: FailedRecord) -> PermanentError:
    """What the handler raises for a request given up, the first time and on redelivery."""
    if record.kind == "exhausted":
        return AttemptsExhausted(f"gave up after {record.attempts} attempts: {record.reason}")
    return PermanentError(record.reason)


def _now_ms() -> int:
    return int(time.time() * 1000)


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
        record_ledger: SendLedger | None = None,
    ) -> None:
        """``record_ledger``: the ledger outcome records are written to, when not ``ledger``
        (the service gives records a connection pool of their own)."""
        self.policy = policy
        self.renderer = renderer
        self.sender = sender
        self.suppressions = suppressions
        self.ledger = ledger
        self.recorder = Recorder(record_ledger or ledger, sleep=sleep)
        self.throttle = throttle
        self.publish = publish
        self.label = domain_labels
        self.sleep = sleep
        self._one_at_a_time = _OneAtATime()
        #: this process's name on the sending leases it takes
        self.holder = uuid.uuid4().hex

    async def __call__(self, message: Message[SendEmail]) -> list[CloudEvent]:
        domain = domain_of(message.payload.to)
        with structlog.contextvars.bound_contextvars(to_domain=domain):
            async with self._one_at_a_time(message.event.id):
                await self._deliver(message, domain)
        return []  # every outcome event is published by the handler itself (see above)

    async def close(self) -> list[str]:
        """The service is stopping: the request ids whose outcome Redis never recorded."""
        return await self.recorder.close()

    async def _deliver(self, message: Message[SendEmail], domain: str) -> None:
        label = self.label(domain)
        if await self._settled_before(message, label):
            return
        await self._hold(message, label)
        try:
            await self._attempt(message, domain, label)
        finally:
            await self._release(message.event.id)

    async def _attempt(self, message: Message[SendEmail], domain: str, label: str) -> None:
        """Steps 4 to 7, with the request held."""
        if message.attempt > self.policy.max_attempts:
            # the last attempt never completed (crash, timeout, Redis away): nothing was
            # recorded, so give up now rather than try the relay past the limit
            attempts = self.policy.max_attempts
            reason = f"no outcome after {attempts} attempts: the last one did not complete"
            await self._give_up(
                message, label, FailedRecord("exhausted", reason, False, None, attempts, _now_ms())
            )
        email = await self._compose(message, label)
        await self._pace(message, domain, label)

        started = time.perf_counter()
        outcome = classify(await self.sender.send(email))
        answered = time.perf_counter()
        if outcome.verdict is Verdict.SENT:
            await self._accepted(message, email, label, outcome, answered)
            metrics.SMTP_SECONDS.labels(outcome.verdict.value).observe(answered - started)
            return
        metrics.SMTP_SECONDS.labels(outcome.verdict.value).observe(answered - started)
        if outcome.verdict is Verdict.RETRY:
            await self._deferred(message, domain, label, outcome)
        await self._rejected(message, label, outcome)

    # -- before sending ------------------------------------------------------------

    async def _settled_before(self, message: Message[SendEmail], label: str) -> bool:
        """Steps 1 and 2: True when the outcome is published and nothing is to be sent;
        raises when the request was given up before."""
        event, request = message.event, message.payload
        known: SentRecord | FailedRecord | None = self.recorder.unwritten(event.id)
        if known is not None:
            # decided in this process and not yet in Redis: never act on it again, and do
            # not end this delivery either before the record is durable
            log.info("outcome decided here is not recorded yet; waiting for Redis")
            await self.recorder.written(event.id)
        else:
            known = await self.ledger.get(event.id)
            if known is None:
                known = await self.ledger.failure(event.id)
        if isinstance(known, SentRecord):
            metrics.ALREADY_SENT.inc()
            log.info("already accepted by the relay; not sent again")
            await self._publish(self._sent(message, known))
            return True
        if isinstance(known, FailedRecord):
            log.info("already given up; email.failed published again", reason=known.reason)
            await self._publish(self._failed(message, known))
            raise _error_of(known)

        suppression = await self.suppressions.get(request.to)
        if suppression is None:
            return False
        if suppression.event_id == event.id:
            # this very request was refused and suppressed, and the handler was cut off
            # before its give-up was recorded: finish that, rather than report "suppressed"
            await self._give_up(
                message,
                label,
                FailedRecord(
                    "rejected",
                    suppression.reason,
                    True,
                    suppression.smtp_code,
                    message.attempt,
                    _now_ms(),
                ),
            )
        metrics.SUPPRESSED.labels(label).inc()
        log.info("address is suppressed; not sent", smtp_code=suppression.smtp_code)
        payload = EmailSuppressed(
            request_id=event.id,
            to=request.to,
            reason=suppression.reason,
            smtp_code=suppression.smtp_code,
        )
        await self._publish(self._event(payload, message, "suppressed"))
        return True

    async def _hold(self, message: Message[SendEmail], label: str) -> None:
        """Step 3: take the sending lease, or look again later if another replica has it."""
        event_id = message.event.id
        left_ms = await self.ledger.hold(event_id, self.holder, self.policy.send_lease_ms)
        if left_ms == 0:
            return
        metrics.RETRIED.labels(label, "held_elsewhere").inc()
        log.info("another replica is sending this request; not sent here", lease_left_ms=left_ms)
        delay_ms = min(left_ms, HELD_ELSEWHERE_RECHECK_MS)
        delay_ms += int(random.uniform(0, delay_ms / 10))  # ± nothing in lockstep
        raise RetryLater(
            "being sent by another replica", delay_ms=delay_ms, counts_as_delivery=False
        )

    async def _release(self, event_id: str) -> None:
        """Give the lease up once the outcome is recorded. Not while a record still waits
        for Redis: until it is there, the lease is what keeps other replicas off (it runs
        out by itself)."""
        if self.recorder.unwritten(event_id) is not None:
            return
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                await self.ledger.release(event_id, self.holder)
        except (RedisError, OSError, TimeoutError) as error:
            log.info("sending lease not released; it runs out by itself", error=str(error))

    async def _compose(self, message: Message[SendEmail], label: str) -> OutgoingEmail:
        """Step 5: render and build the message; a render error is permanent."""
        request = message.payload
        try:
            content = self.renderer.render(request)
        except RenderError as error:
            problem = str(error)
        else:
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
        await self._give_up(
            message, label, FailedRecord("invalid", problem, True, None, message.attempt, _now_ms())
        )

    async def _pace(self, message: Message[SendEmail], domain: str, label: str) -> None:
        """Step 6: wait briefly for the domain's rate, or reschedule the request."""
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
        self,
        message: Message[SendEmail],
        email: OutgoingEmail,
        label: str,
        outcome: Outcome,
        answered: float,
    ) -> None:
        """The relay took it: the marker first (until Redis has it, a crash sends twice),
        returning only once it is written; then the event."""
        record = SentRecord(email.message_id, message.attempt, _now_ms())
        await self.recorder.record(message.event.id, record, since=answered)
        metrics.SENT.labels(label).inc()
        log.info("accepted by the relay", smtp_code=outcome.code, message_id=email.message_id)
        await self._publish(self._sent(message, record))

    async def _deferred(
        self, message: Message[SendEmail], domain: str, label: str, outcome: Outcome
    ) -> NoReturn:
        if outcome.slow_down:
            try:
                level = await self.throttle.slow_down(domain)
            except (RedisError, OSError) as error:
                # pacing is an optimisation: Redis being away must not turn this reply
                # into a failed delivery (nor keep the last attempt from giving up)
                log.warning("could not slow the domain down", error=str(error))
            else:
                metrics.SLOWDOWNS.labels(label).inc()
                log.info("domain asked us to slow down", smtp_code=outcome.code, level=level)
        metrics.RETRIED.labels(label, outcome.retry_reason).inc()
        if message.attempt >= self.policy.max_attempts:
            await self._give_up(
                message,
                label,
                FailedRecord(
                    "exhausted", outcome.reason, False, outcome.code, message.attempt, _now_ms()
                ),
            )
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
                    at_ms=_now_ms(),
                )
            )
            if added:
                metrics.SUPPRESSIONS_ADDED.labels(label).inc()
        kind: Literal["rejected", "invalid"] = "rejected" if outcome.code else "invalid"
        await self._give_up(
            message,
            label,
            FailedRecord(kind, outcome.reason, True, outcome.code, message.attempt, _now_ms()),
        )

    async def _give_up(
        self, message: Message[SendEmail], label: str, record: FailedRecord
    ) -> NoReturn:
        """Record the failure, publish ``email.failed``, raise: the runtime dead-letters."""
        metrics.FAILED.labels(label, record.kind).inc()
        log.warning("giving up on this email", reason=record.reason, permanent=record.permanent)
        await self.recorder.record(message.event.id, record)
        await self._publish(self._failed(message, record))
        raise _error_of(record)

    async def _publish(self, event: CloudEvent) -> None:
        """Publish an outcome event, retrying while Redis is away: the handler does not end
        before its outcome is out. Cut off meanwhile, the redelivery publishes it again."""
        pause_s = PUBLISH_FIRST_RETRY_S
        tries = 1
        while True:
            try:
                await self.publish([event])
            except (RedisError, OSError) as error:
                # a handler timeout's or the drain's cancel that redis-py swallowed inside
                # the command must still end this loop
                raise_if_cancelled()
                if tries == 1:
                    log.warning(
                        "outcome event not published yet; retrying until Redis answers",
                        outcome_type=event.type,
                        error=str(error),
                    )
                await self.sleep(pause_s)
                pause_s = min(pause_s * 2, PUBLISH_LONGEST_RETRY_S)
                tries += 1
                continue
            if tries > 1:
                log.info("outcome event published", outcome_type=event.type, tries=tries)
            return

    # -- events --------------------------------------------------------------------

    def _sent(self, message: Message[SendEmail], record: SentRecord) -> CloudEvent:
        payload = EmailSent(
            request_id=message.event.id,
            to=message.payload.to,
            message_id=record.message_id,
            attempts=record.attempts,
        )
        return self._event(payload, message, "sent", at_ms=record.at_ms)

    def _failed(self, message: Message[SendEmail], record: FailedRecord) -> CloudEvent:
        payload = EmailFailed(
            request_id=message.event.id,
            to=message.payload.to,
            reason=record.reason,
            permanent=record.permanent,
            smtp_code=record.smtp_code,
            attempts=record.attempts,
        )
        return self._event(payload, message, "failed", at_ms=record.at_ms)

    @staticmethod
    def _event(
        payload: Payload,
        message: Message[SendEmail],
        kind: Literal["sent", "failed", "suppressed"],
        *,
        at_ms: int = 0,
    ) -> CloudEvent:
        """The outcome event; from a record, with the record's time, so that publishing
        it again publishes the very same event."""
        attributes: dict[str, Any] = {}
        if at_ms > 0:
            attributes["time"] = datetime.fromtimestamp(at_ms / 1000, UTC)
        return new_event(
            payload,
            cause=message.event,
            id=outcome_event_id(message.event.id, kind),
            source=SOURCE,
            **attributes,
        )
