"""Deliver one task: one signed POST to one endpoint, and what follows from its answer.

What the answer decides (see :mod:`riverbed_webhooks.domain.retry`):

- 2xx: the delivery succeeded; the endpoint's failure clock stops;
  ``webhook.delivery.succeeded.v1``.
- 410: the endpoint is disabled at once (``webhook.endpoint.disabled.v1``).
- anything else: the failure clock runs; past the health period the endpoint is
  disabled; else the task is retried per the schedule (``RetryLater``), honouring
  ``Retry-After`` on 429/503; after the last attempt ``webhook.delivery.exhausted.v1``
  and the task is dead-lettered (``PermanentError``).

Every outcome event is queued in the outbox in the same database transaction as the
record of the outcome (the attempt and the delivery's status, or the disabling), under
an id derived from the fact (:mod:`riverbed_webhooks.domain.outcomes`); the runtime's
relay appends it. Nothing is published from here, so no crash or Redis outage between
the record and the publish can lose an outcome, and repeating one (a redelivered task)
queues nothing new.

Attempts are counted per task in the delivery log, not by the stream's delivery
count: a task put back by the endpoint's rate limit or concurrency cap has made
no attempt (``RetryLater(counts_as_delivery=False)``: it waits as long as it must and
is never dead-lettered for waiting), and a replay starts a new task with a full
schedule.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NoReturn

import structlog

from riverbed.errors import PermanentError, RetryLater
from riverbed_contracts import CloudEvent, DeliverWebhook, WebhookDelivered
from riverbed_webhooks import metrics
from riverbed_webhooks.domain import health
from riverbed_webhooks.domain.model import (
    Attempt,
    Delivery,
    DeliveryStatus,
    DisabledReason,
    Endpoint,
)
from riverbed_webhooks.domain.outcomes import delivery_succeeded, exhausted_report
from riverbed_webhooks.domain.retry import (
    RetrySchedule,
    Verdict,
    deferral_delay_ms,
    next_delay_ms,
    parse_retry_after,
    status_class,
    verdict_for,
)
from riverbed_webhooks.domain.signing import signed_headers
from riverbed_webhooks.service_layer.endpoints import disable_endpoint
from riverbed_webhooks.service_layer.ports import (
    Clock,
    ConcurrencyGate,
    DeliveryLog,
    EndpointCache,
    EndpointRepository,
    RateLimiter,
    SendResult,
    WebhookRequest,
    WebhookSender,
)

log = structlog.get_logger(__name__)

#: a task whose delivery is in one of these states has nothing left to do
CONCLUDED = frozenset({DeliveryStatus.SUCCEEDED, DeliveryStatus.DROPPED})


@dataclass(frozen=True)
class DeliveryPolicy:
    schedule: RetrySchedule
    retry_after_cap_ms: int
    disable_after: timedelta
    default_concurrency: int
    deferral_base_ms: int
    deferral_max_ms: int


def body_of(task: DeliverWebhook) -> bytes:
    """The request body: the event as the subscriber sees it, the same bytes on every attempt."""
    return task.event.model_dump_json(exclude_none=True).encode()


def describe(result: SendResult) -> str:
    if result.status_code is not None:
        return f"HTTP {result.status_code}"
    return result.error or "no response"


@dataclass(frozen=True)
class _Answered:
    """One attempt and its answer: what the steps after the answer decide on."""

    endpoint: Endpoint
    task: DeliverWebhook
    task_id: str
    cause: CloudEvent
    attempt: int  # its number in the task, from 1
    result: SendResult
    at: datetime  # when the answer was judged

    def attempt_row(self) -> Attempt:
        """The attempt as the delivery log records it."""
        delivered = verdict_for(self.result.status_code) is Verdict.DELIVERED
        return Attempt(
            delivery_id=self.task.delivery_id,
            task_id=self.task_id,
            endpoint_id=self.endpoint.id,
            event_id=self.task.event.id,
            attempt=self.attempt,
            attempted_at=self.at,
            succeeded=delivered,
            status_code=self.result.status_code,
            duration_ms=self.result.duration_ms,
            response_body=self.result.body,
            error=None if delivered else describe(self.result)[:2000],
            error_kind=self.result.error_kind,
        )


@dataclass
class Deliverer:
    cache: EndpointCache
    repository: EndpointRepository
    log: DeliveryLog
    sender: WebhookSender
    limiter: RateLimiter
    gate: ConcurrencyGate
    clock: Clock
    policy: DeliveryPolicy
    rng: random.Random = field(default_factory=random.Random)

    async def deliver(self, task: DeliverWebhook, *, task_id: str, cause: CloudEvent) -> None:
        """Run one delivery of the task: returns once its outcome is recorded (and reported,
        through the outbox), or raises RetryLater/PermanentError."""
        endpoint = await self.cache.endpoint(task.endpoint_id)
        known = await self.log.get_delivery(task.delivery_id)
        if known is not None and known.task_id == task_id and known.status in CONCLUDED:
            # a task that already ended: a fan-out redelivered after a crash, or this task
            # redelivered because its acknowledgement was lost (a crash, Redis away). Nothing
            # is left to do: the event reporting the outcome was queued in the outbox in the
            # status's own transaction (or, for a drop after a disabling, in the disabling's),
            # and the relay appends it, if it has not yet.
            log.info("delivery task already concluded; skipped", status=known.status.value)
            return
        made = await self.log.attempts_in_task(task_id)
        if made == 0:
            await self.log.begin_task(self._pending(task, task_id))
        if endpoint is None or not endpoint.enabled:
            reason = "deleted" if endpoint is None else "disabled"
            metrics.DROPPED.labels(reason).inc()
            log.info("delivery dropped: endpoint " + reason, endpoint_id=task.endpoint_id)
            await self.log.set_status(
                task.delivery_id,
                DeliveryStatus.DROPPED,
                error=f"endpoint {reason}",
                at=self.clock(),
            )
            return
        attempt = made + 1
        if attempt > self.policy.schedule.max_attempts:
            # the last attempt was recorded but the task was not dead-lettered (a crash, Redis
            # away): record it exhausted again; its report has the id of the one queued with
            # the last attempt, so the outbox keeps the first
            report = exhausted_report(
                task, task_id=task_id, cause=cause, attempts=made, last_error="retries exhausted"
            )
            await self.log.set_status(
                task.delivery_id, DeliveryStatus.EXHAUSTED, at=self.clock(), emit=[report]
            )
            self._give_up(task, made, "retries exhausted")
        waited_ms = max(int((self.clock() - cause.time).total_seconds() * 1000), 0)
        self._acquire(endpoint, waited_ms=waited_ms)
        try:
            await self._within_rate_limit(endpoint, waited_ms=waited_ms)
            result = await self._send(endpoint, task)
        finally:
            self.gate.release(endpoint.id)
        await self._conclude(endpoint, task, task_id, cause, attempt, result)

    # -- limits --------------------------------------------------------------------------

    def _acquire(self, endpoint: Endpoint, *, waited_ms: int) -> None:
        cap = endpoint.max_concurrency or self.policy.default_concurrency
        if not self.gate.try_acquire(endpoint.id, cap):
            metrics.DEFERRED.labels("concurrency").inc()
            raise RetryLater(
                f"endpoint has {cap} requests in flight",
                delay_ms=self._deferral(waited_ms),
                counts_as_delivery=False,  # nothing was attempted
            )

    async def _within_rate_limit(self, endpoint: Endpoint, *, waited_ms: int) -> None:
        if endpoint.rate_limit_per_s is None:
            return
        wait_ms = await self.limiter.acquire(endpoint.id, endpoint.rate_limit_per_s)
        if wait_ms > 0:
            metrics.DEFERRED.labels("rate_limit").inc()
            # spread the queued tasks over the next window instead of bunching at its start
            delay = wait_ms + self._deferral(waited_ms) // 4
            raise RetryLater(
                f"endpoint rate limit of {endpoint.rate_limit_per_s}/s",
                delay_ms=delay,
                counts_as_delivery=False,  # nothing was attempted
            )

    def _deferral(self, waited_ms: int) -> int:
        return deferral_delay_ms(
            waited_ms,
            base_ms=self.policy.deferral_base_ms,
            max_ms=self.policy.deferral_max_ms,
            rng=self.rng,
        )

    # -- the request -----------------------------------------------------------------------

    async def _send(self, endpoint: Endpoint, task: DeliverWebhook) -> SendResult:
        now = self.clock()
        body = body_of(task)
        headers = signed_headers(
            endpoint.signing_secrets(now), task.event.id, int(now.timestamp()), body
        )
        metrics.ATTEMPTS.inc()
        result = await self.sender.send(WebhookRequest(endpoint.url, headers, body))
        # no endpoint label: /metrics is public; per endpoint, see the log lines below
        metrics.ATTEMPT_SECONDS.observe(result.duration_ms / 1000)
        return result

    # -- what the answer means ---------------------------------------------------------------

    async def _conclude(
        self,
        endpoint: Endpoint,
        task: DeliverWebhook,
        task_id: str,
        cause: CloudEvent,
        attempt: int,
        result: SendResult,
    ) -> None:
        answered = _Answered(endpoint, task, task_id, cause, attempt, result, at=self.clock())
        if verdict_for(result.status_code) is Verdict.DELIVERED:
            await self._delivered(answered)
        else:
            await self._failed(answered)

    async def _record(self, answered: _Answered, status: DeliveryStatus, *emit: CloudEvent) -> None:
        """The attempt, the delivery's new ``status`` and the events reporting it, at once."""
        task = answered.task
        await self.log.record_attempt(
            answered.attempt_row(),
            status,
            event_type=task.event.type,
            event=task.event.model_dump(mode="json", exclude_none=True),
            emit=emit,
        )

    async def _delivered(self, answered: _Answered) -> None:
        endpoint, task, result = answered.endpoint, answered.task, answered.result
        metrics.SUCCEEDED.inc()
        assert result.status_code is not None
        delivered = WebhookDelivered(
            delivery_id=task.delivery_id,
            endpoint_id=endpoint.id,
            event_id=task.event.id,
            attempt=answered.attempt,
            status_code=result.status_code,
            duration_ms=result.duration_ms,
        )
        # the failure clock first: a crash before the record below sends the request
        # again (as a crash right after the answer would), while one after it would leave
        # a concluded task whose success never stopped the clock
        await self.repository.record_success(endpoint.id, answered.at)
        await self._record(
            answered,
            DeliveryStatus.SUCCEEDED,
            delivery_succeeded(delivered, task_id=answered.task_id, cause=answered.cause),
        )
        log.info(
            "webhook delivered",
            endpoint_id=endpoint.id,
            status=result.status_code,
            duration_ms=result.duration_ms,
        )

    async def _failed(self, answered: _Answered) -> None:
        """Disable the endpoint (410, or failing too long), or retry, or give up."""
        result = answered.result
        metrics.FAILED.labels(status_class(result.status_code, result.error_kind)).inc()
        log.info(
            "webhook attempt failed",
            endpoint_id=answered.endpoint.id,
            status=result.status_code,
            error=result.error,
            error_kind=result.error_kind,
            duration_ms=result.duration_ms,
            task_attempt=answered.attempt,
        )
        # A disabling is recorded (with its report) before the attempt that caused it: a
        # crash in between leaves the task open, and its redelivery drops it for the disabled
        # endpoint; the other order would leave a dropped (concluded) task and an endpoint
        # never disabled nor reported.
        if await self._disabled_by(answered):
            await self._record(answered, DeliveryStatus.DROPPED)
            return
        delay = next_delay_ms(
            self.policy.schedule,
            answered.attempt,
            status_code=result.status_code,
            retry_after_ms=parse_retry_after(result.retry_after, answered.at),
            retry_after_cap_ms=self.policy.retry_after_cap_ms,
            rng=self.rng,
        )
        if delay is None:
            last_error = describe(result)
            report = exhausted_report(
                answered.task,
                task_id=answered.task_id,
                cause=answered.cause,
                attempts=answered.attempt,
                last_status_code=result.status_code,
                last_error=last_error,
            )
            await self._record(answered, DeliveryStatus.EXHAUSTED, report)
            self._give_up(answered.task, answered.attempt, last_error)
        await self._record(answered, DeliveryStatus.RETRYING)
        raise RetryLater(f"attempt {answered.attempt} failed: {describe(result)}", delay_ms=delay)

    async def _disabled_by(self, answered: _Answered) -> bool:
        """Whether this failure disabled the endpoint: a 410 Gone at once, any other once
        the endpoint has been failing for longer than the policy's ``disable_after``."""
        endpoint_id, now = answered.endpoint.id, answered.at
        status_code = answered.result.status_code
        if verdict_for(status_code) is Verdict.GONE:
            await disable_endpoint(
                self.repository,
                self.cache,
                endpoint_id,
                DisabledReason.GONE,
                now,
                cause=answered.cause,
                last_status_code=410,
                detail="the endpoint answered 410 Gone",
            )
            return True
        failing_since = await self.repository.record_failure(endpoint_id, now)
        if not health.should_disable(failing_since, now, self.policy.disable_after):
            return False
        assert failing_since is not None
        await disable_endpoint(
            self.repository,
            self.cache,
            endpoint_id,
            DisabledReason.FAILING,
            now,
            cause=answered.cause,
            failing_since=failing_since,
            last_status_code=status_code,
            detail=health.describe_failing(failing_since, now),
        )
        return True

    def _give_up(self, task: DeliverWebhook, attempts: int, last_error: str) -> NoReturn:
        """Dead-letter the task (the runtime does, on PermanentError), once its exhaustion is
        recorded and reported."""
        metrics.EXHAUSTED.inc()
        log.warning("webhook delivery exhausted", endpoint_id=task.endpoint_id, attempts=attempts)
        raise PermanentError(f"delivery exhausted after {attempts} attempts: {last_error}")

    def _pending(self, task: DeliverWebhook, task_id: str) -> Delivery:
        now = self.clock()
        return Delivery(
            delivery_id=task.delivery_id,
            endpoint_id=task.endpoint_id,
            event_id=task.event.id,
            event_type=task.event.type,
            event=json.loads(body_of(task)),
            status=DeliveryStatus.PENDING,
            task_id=task_id,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
