"""Delivering one ``email.requested.v1``: the steps, in order, and what each outcome publishes.

1. **Settled before?** The request's outcome was recorded by an earlier delivery — the
   relay accepted it (the sent marker), or it was given up (the failure record) — and
   that delivery ended before its entry was acknowledged (a crash, a kill, Redis away).
   Nothing is sent; the same ``email.sent`` (or ``email.failed``, then the dead letter)
   is published again. A record made in this process that Redis has not taken yet counts
   too (``adapters.records``), and is waited for.
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
7. **Send** to the relay, and classify its answer (``domain.smtp_replies``):

   - sent: record the send under the event id before anything else, and return only
     once Redis has the record; then publish ``email.sent``;
   - retry: slow the domain down on 421/450/451/452, raise so the runtime retries on
     the SMTP schedule; on the last attempt give up (not permanent);
   - reject: suppress the address (when the refusal is about it), give up (permanent).

Giving up is: record the failure under the event id, publish ``email.failed``, raise a
``PermanentError`` (``AttemptsExhausted`` when out of attempts) so the runtime
dead-letters the request. Recording then publishing is :mod:`.reporting`'s: the use case
publishes every outcome itself, retrying while Redis is away, and leaves nothing for the
runtime to publish. Every outcome event's id derives from the request's
(:mod:`riverbed_email.domain.outcome_events`): published twice, it is the same event.

The service counts attempts itself: the runtime's limit is ``EMAIL_MAX_ATTEMPTS`` plus
:data:`GRACE_DELIVERIES` (``riverbed_email.bootstrap``), so a last attempt that crashed or
timed out is delivered once more, here, instead of being dead-lettered without an outcome.
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

from riverbed.errors import RetryLater
from riverbed_email import metrics
from riverbed_email.domain.addresses import DomainLabels, domain_of, normalize
from riverbed_email.domain.compose import OutgoingEmail, Unsubscribe, compose, message_id_for
from riverbed_email.domain.content import RenderError
from riverbed_email.domain.errors import SmtpDeferred
from riverbed_email.domain.records import FailedRecord, SentRecord, Suppression
from riverbed_email.domain.request import EmailRequest
from riverbed_email.domain.smtp_replies import Outcome, Verdict, classify
from riverbed_email.service_layer.one_at_a_time import OneAtATime
from riverbed_email.service_layer.ports import (
    DomainThrottle,
    EmailSender,
    OutcomeRecorder,
    Publish,
    Renderer,
    SendLedger,
    SuppressionList,
)
from riverbed_email.service_layer.reporting import OutcomeReporter, now_ms

log = structlog.get_logger(__name__)

#: deliveries the runtime allows past EMAIL_MAX_ATTEMPTS: a last attempt cut off by a crash,
#: a timeout or Redis being away is delivered again and gives up with email.failed; only a
#: request that keeps killing its handler this many more times is dead-lettered without one
GRACE_DELIVERIES = 3

#: ms; a request another replica holds is looked at again this often (at most), so its
#: outcome is published soon after that replica records it, or sent soon after its lease
#: runs out when that replica died
HELD_ELSEWHERE_RECHECK_MS = 5_000

#: s; longest wait for giving the lease up: best effort, it runs out by itself anyway
RELEASE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class DeliveryPolicy:
    from_address: str
    envelope_sender: str
    message_id_domain: str
    max_attempts: int  # EMAIL_MAX_ATTEMPTS: the last attempt gives up with email.failed
    rate_limit_max_wait_ms: int
    unsubscribe: Unsubscribe | None = None
    send_lease_ms: int = 300_000  # EMAIL_SEND_LEASE_S, in ms


class Delivery:
    """Delivers ``email.requested`` commands; every dependency is a port, passed in."""

    def __init__(
        self,
        policy: DeliveryPolicy,
        *,
        renderer: Renderer,
        sender: EmailSender,
        suppressions: SuppressionList,
        ledger: SendLedger,
        recorder: OutcomeRecorder,
        throttle: DomainThrottle,
        publish: Publish,
        domain_labels: DomainLabels,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``ledger`` is read (and holds the sending leases); outcome records are written
        through ``recorder`` (the service gives it a connection pool of its own)."""
        self.policy = policy
        self.renderer = renderer
        self.sender = sender
        self.suppressions = suppressions
        self.ledger = ledger
        self.recorder = recorder
        self.reporter = OutcomeReporter(
            ledger=ledger, recorder=recorder, publish=publish, sleep=sleep
        )
        self.throttle = throttle
        self.label = domain_labels
        self.sleep = sleep
        self._one_at_a_time = OneAtATime()
        #: this process's name on the sending leases it takes
        self.holder = uuid.uuid4().hex

    async def deliver(self, request: EmailRequest) -> None:
        """Act on one delivery of a request; publishes its outcome event itself, raises
        for the runtime to retry (:class:`SmtpDeferred`, ``RetryLater``) or dead-letter
        (``PermanentError``)."""
        domain = domain_of(request.to)
        with structlog.contextvars.bound_contextvars(to_domain=domain):
            async with self._one_at_a_time(request.id):
                await self._deliver(request, domain)

    async def close(self) -> list[str]:
        """The service is stopping: the request ids whose outcome Redis never recorded."""
        return await self.recorder.close()

    async def _deliver(self, request: EmailRequest, domain: str) -> None:
        label = self.label(domain)
        if await self.reporter.published_again(request):
            return
        if await self._suppressed(request, label):
            return
        await self._hold(request, label)
        try:
            await self._attempt(request, domain, label)
        finally:
            await self._release(request.id)

    async def _attempt(self, request: EmailRequest, domain: str, label: str) -> None:
        """Steps 4 to 7, with the request held."""
        if request.attempt > self.policy.max_attempts:
            # the last attempt never completed (crash, timeout, Redis away): nothing was
            # recorded, so give up now rather than try the relay past the limit
            attempts = self.policy.max_attempts
            reason = f"no outcome after {attempts} attempts: the last one did not complete"
            given_up = FailedRecord("exhausted", reason, False, None, attempts, now_ms())
            await self.reporter.give_up(request, label, given_up)
        email = await self._compose(request, label)
        await self._pace(domain, label)

        started = time.perf_counter()
        outcome = classify(await self.sender.send(email))
        answered = time.perf_counter()
        if outcome.verdict is Verdict.SENT:
            record = SentRecord(email.message_id, request.attempt, now_ms())
            await self.reporter.accepted(request, label, record, since=answered, code=outcome.code)
            metrics.SMTP_SECONDS.labels(outcome.verdict.value).observe(answered - started)
            return
        metrics.SMTP_SECONDS.labels(outcome.verdict.value).observe(answered - started)
        if outcome.verdict is Verdict.RETRY:
            await self._deferred(request, domain, label, outcome)
        await self._rejected(request, label, outcome)

    # -- before sending ------------------------------------------------------------

    async def _suppressed(self, request: EmailRequest, label: str) -> bool:
        """Step 2: True when the address is suppressed (``email.suppressed`` is out)."""
        suppression = await self.suppressions.get(request.to)
        if suppression is None:
            return False
        if suppression.event_id == request.id:
            # this very request was refused and suppressed, and the handler was cut off
            # before its give-up was recorded: finish that, rather than report "suppressed"
            record = FailedRecord(
                "rejected",
                suppression.reason,
                True,
                suppression.smtp_code,
                request.attempt,
                now_ms(),
            )
            await self.reporter.give_up(request, label, record)
        await self.reporter.suppressed(request, label, suppression)
        return True

    async def _hold(self, request: EmailRequest, label: str) -> None:
        """Step 3: take the sending lease, or look again later if another replica has it."""
        left_ms = await self.ledger.hold(request.id, self.holder, self.policy.send_lease_ms)
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

    async def _compose(self, request: EmailRequest, label: str) -> OutgoingEmail:
        """Step 5: render and build the message; a render error is permanent."""
        try:
            content = self.renderer.render(request.email)
        except RenderError as error:
            problem = str(error)
        else:
            return compose(
                content,
                to=request.to,
                from_address=self.policy.from_address,
                envelope_sender=self.policy.envelope_sender,
                message_id=message_id_for(request.id, self.policy.message_id_domain),
                date=request.event.time,
                category=request.email.category,
                unsubscribe=self.policy.unsubscribe,
            )
        record = FailedRecord("invalid", problem, True, None, request.attempt, now_ms())
        await self.reporter.give_up(request, label, record)

    async def _pace(self, domain: str, label: str) -> None:
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

    # -- the relay's answer ----------------------------------------------------------

    async def _deferred(
        self, request: EmailRequest, domain: str, label: str, outcome: Outcome
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
        if request.attempt >= self.policy.max_attempts:
            record = FailedRecord(
                "exhausted", outcome.reason, False, outcome.code, request.attempt, now_ms()
            )
            await self.reporter.give_up(request, label, record)
        raise SmtpDeferred(outcome.reason)

    async def _rejected(self, request: EmailRequest, label: str, outcome: Outcome) -> NoReturn:
        if outcome.suppress:
            added = await self.suppressions.add(
                Suppression(
                    address=normalize(request.to),
                    reason=outcome.reason,
                    smtp_code=outcome.code,
                    event_id=request.id,
                    at_ms=now_ms(),
                )
            )
            if added:
                metrics.SUPPRESSIONS_ADDED.labels(label).inc()
        kind: Literal["rejected", "invalid"] = "rejected" if outcome.code else "invalid"
        record = FailedRecord(kind, outcome.reason, True, outcome.code, request.attempt, now_ms())
        await self.reporter.give_up(request, label, record)
