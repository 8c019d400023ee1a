"""What each outcome of a request leaves behind: its record first, then its event.

Record, then publish: whatever interrupts the handler between the two (a crash, Redis
away, a timeout), the redelivery finds the record and publishes the same event
(:mod:`riverbed_email.domain.outcome_events`). Every event is published here, retrying
while Redis is away: the handler never ends, successfully, before its outcome is out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

import structlog
from redis.exceptions import RedisError

from riverbed.eventloop import raise_if_cancelled
from riverbed_contracts import CloudEvent
from riverbed_email import metrics
from riverbed_email.domain.errors import error_of
from riverbed_email.domain.outcome_events import failed_event, sent_event, suppressed_event
from riverbed_email.domain.records import FailedRecord, OutcomeRecord, SentRecord, Suppression
from riverbed_email.domain.request import EmailRequest
from riverbed_email.service_layer.ports import OutcomeRecorder, Publish, SendLedger

log = structlog.get_logger(__name__)

#: s; first and longest pause between two tries to publish an outcome while Redis is away
PUBLISH_FIRST_RETRY_S = 0.05
PUBLISH_LONGEST_RETRY_S = 1.0


def now_ms() -> int:
    """Wall-clock time of a record, ms since the epoch."""
    return int(time.time() * 1000)


class OutcomeReporter:
    """Records outcomes (``recorder``), publishes their events (``publish``), and finds
    the outcomes recorded before (``ledger``)."""

    def __init__(
        self,
        *,
        ledger: SendLedger,
        recorder: OutcomeRecorder,
        publish: Publish,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.ledger = ledger
        self.recorder = recorder
        self.publish = publish
        self.sleep = sleep

    async def published_again(self, request: EmailRequest) -> bool:
        """True when the request's outcome was recorded before and its event is published
        again (nothing is to be sent); raises when the request was given up before."""
        known: OutcomeRecord | None = self.recorder.unwritten(request.id)
        if known is not None:
            # decided in this process and not yet in Redis: never act on it again, and do
            # not end this delivery either before the record is durable
            log.info("outcome decided here is not recorded yet; waiting for Redis")
            await self.recorder.written(request.id)
        else:
            known = await self.ledger.get(request.id) or await self.ledger.failure(request.id)
        if isinstance(known, SentRecord):
            metrics.ALREADY_SENT.inc()
            log.info("already accepted by the relay; not sent again")
            await self._publish(sent_event(request, known))
            return True
        if isinstance(known, FailedRecord):
            log.info("already given up; email.failed published again", reason=known.reason)
            await self._publish(failed_event(request, known))
            raise error_of(known)
        return False

    async def accepted(
        self,
        request: EmailRequest,
        label: str,
        record: SentRecord,
        *,
        since: float,
        code: int | None,
    ) -> None:
        """The relay took it: the marker first (until Redis has it, a crash sends twice),
        returning only once it is written; then the event. ``since``: the relay's answer,
        ``time.perf_counter()``."""
        await self.recorder.record(request.id, record, since=since)
        metrics.SENT.labels(label).inc()
        log.info("accepted by the relay", smtp_code=code, message_id=record.message_id)
        await self._publish(sent_event(request, record))

    async def suppressed(self, request: EmailRequest, label: str, suppression: Suppression) -> None:
        metrics.SUPPRESSED.labels(label).inc()
        log.info("address is suppressed; not sent", smtp_code=suppression.smtp_code)
        await self._publish(suppressed_event(request, suppression))

    async def give_up(self, request: EmailRequest, label: str, record: FailedRecord) -> NoReturn:
        """Record the failure, publish ``email.failed``, raise: the runtime dead-letters."""
        metrics.FAILED.labels(label, record.kind).inc()
        log.warning("giving up on this email", reason=record.reason, permanent=record.permanent)
        await self.recorder.record(request.id, record)
        await self._publish(failed_event(request, record))
        raise error_of(record)

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
