"""Recording payment events in the ledger, exactly once in effect.

One event, one database transaction: claim (consumer group, event id) in
``processed_messages``; build the ledger transaction the event implies (the domain
checks amounts, currencies and balance); store it; queue the events it causes in the
outbox; commit. The runtime acknowledges the stream entry only after the handler
returns, i.e. after the commit. A redelivered event finds its claim and changes
nothing; a second event about the same provider object (same provider id, new event
id) finds the transaction and changes nothing either — the unique constraint on
(provider, kind, provider id) settles a race between the two.

Streams are consumed independently, so a refund or a dispute can arrive before the
payment it refers to. Such an event is put back without counting as a delivery
(``RetryLater(counts_as_delivery=False)``): how often it was tried says nothing about
whether its payment is coming, how long it has waited does. It is retried after
:func:`out_of_order_delay_ms` and dead-lettered once it has waited longer than
``out_of_order_max_wait_s`` since this group first received it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from riverbed.consumer import Message
from riverbed.errors import PermanentError, RetryLater
from riverbed_contracts import CloudEvent, PaymentFailed, PaymentRefunded, PaymentSucceeded
from riverbed_contracts.payments import (
    PaymentDisputeClosed,
    PaymentDisputeOpened,
    PaymentRecorded,
    PaymentRefundRecorded,
    PayoutPaid,
)
from riverbed_contracts.registry import get_spec, new_event
from riverbed_payments import SOURCE, metrics
from riverbed_payments.adapters.sql import OutboxMessage
from riverbed_payments.domain import ledger
from riverbed_payments.domain.currency import InvalidAmount, check_currency
from riverbed_payments.domain.ledger import Kind, Transaction, UnbalancedTransaction
from riverbed_payments.domain.receipt import receipt, receipt_address
from riverbed_payments.service_layer.ports import Clock, Ledger, LedgerUnit

log = structlog.get_logger(__name__)

#: ms; the longest wait between two tries of an out-of-order event. A payment that shows up
#: late is then matched by its refund within five minutes, and an event waiting out the
#: whole bound (24 h by default) is tried about 300 times, which costs nothing.
OUT_OF_ORDER_MAX_RETRY_MS = 300_000


def out_of_order_delay_ms(waited_ms: int, *, base_ms: int, max_ms: int) -> int:
    """Wait before the next try of an event whose payment (or dispute) is not recorded yet.

    A quarter of what it has waited so far (``waited_ms``), at least ``base_ms`` and at
    most ``max_ms`` (or ``base_ms`` when that is larger): a payment a moment late is
    picked up at the pace of ``base_ms``, one that is hours late is polled for every few
    minutes, and each try adds a quarter to the event's age, so an event that is late
    for good reaches the cap after about 25 tries instead of spinning.
    """
    return max(min(waited_ms // 4, max_ms), base_ms)


class OutOfOrder(Exception):
    """The event refers to something the ledger has not recorded yet."""


@dataclass(frozen=True)
class Recorded:
    """What handling one event did."""

    outcome: str  # recorded | already_processed | already_recorded | failure_recorded | ignored
    transaction: Transaction | None = None
    emitted: tuple[CloudEvent, ...] = ()


class Recorder:
    def __init__(
        self,
        ledger_store: Ledger,
        *,
        group: str,
        stream_for: Callable[[str], str],
        clock: Clock,
        receipts: bool = True,
        out_of_order_retry_ms: int = 5_000,
        out_of_order_max_wait_s: float = 86_400.0,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.ledger = ledger_store
        self.group = group
        self.stream_for = stream_for
        self.clock = clock
        self.receipts = receipts
        self.out_of_order_retry_ms = out_of_order_retry_ms
        self.out_of_order_max_wait_ms = int(out_of_order_max_wait_s * 1000)
        self.on_commit = on_commit

    async def __call__(self, message: Message[Any]) -> None:
        """The stream handler: nothing is returned, the outbox carries what this emits."""
        try:
            result = await self.record(message.event, message.payload, stream=message.stream)
        except (InvalidAmount, UnbalancedTransaction) as error:
            metrics.REJECTED.labels("invalid_amount").inc()
            raise PermanentError(f"{message.event.type}: {error}") from error
        except OutOfOrder as error:
            raise self._out_of_order(message, error) from error
        metrics.HANDLED.labels(result.outcome).inc()
        if result.outcome in ("already_processed", "already_recorded"):
            log.info("payment event changes nothing", outcome=result.outcome)

    def _out_of_order(self, message: Message[Any], error: OutOfOrder) -> Exception:
        """What to raise for an event that came before what it refers to: a deferral that
        does not count as a delivery while it is within the wait bound, a permanent error
        (dead-lettered) past it."""
        if message.first_seen_ms <= 0:
            # the runtime did not say when the event arrived, so its wait cannot be bounded
            # by time: fall back to retries that count, bounded by the delivery limit
            log.warning("out-of-order event without first_seen_ms: retrying as a failure")
            metrics.REJECTED.labels("out_of_order").inc()
            return RetryLater(str(error), delay_ms=self.out_of_order_retry_ms)
        now_ms = int(self.clock().timestamp() * 1000)
        # clamped: the first-seen time comes from Redis's clock, "now" from this host's
        waited_ms = max(now_ms - message.first_seen_ms, 0)
        if waited_ms > self.out_of_order_max_wait_ms:
            metrics.REJECTED.labels("out_of_order_expired").inc()
            return PermanentError(
                f"{message.event.type} {message.event.id}: gave up after waiting "
                f"{_duration(waited_ms)} (PAYMENTS_OUT_OF_ORDER_MAX_WAIT_S is "
                f"{_duration(self.out_of_order_max_wait_ms)}) for what it refers to: {error}"
            )
        delay_ms = out_of_order_delay_ms(
            waited_ms,
            base_ms=self.out_of_order_retry_ms,
            max_ms=OUT_OF_ORDER_MAX_RETRY_MS,
        )
        # +1 ms: the try after the bound finds the wait longer than the bound and
        # dead-letters the event then, not up to a whole delay later
        delay_ms = min(delay_ms, self.out_of_order_max_wait_ms - waited_ms + 1)
        metrics.REJECTED.labels("out_of_order").inc()
        return RetryLater(
            f"{error} (waited {_duration(waited_ms)} so far)",
            delay_ms=delay_ms,
            counts_as_delivery=False,  # "not yet", not a failure: time bounds the wait
        )

    async def record(self, event: CloudEvent, payload: Any, *, stream: str) -> Recorded:
        started = time.perf_counter()
        now = self.clock()
        async with self.ledger.unit() as unit:
            claimed = await unit.claim_message(
                self.group, event.id, stream=stream, event_type=event.type, at=now
            )
            if not claimed:
                return Recorded("already_processed")
            result = await self._apply(unit, event, payload, now)
            await unit.set_outcome(self.group, event.id, result.outcome)
            if result.transaction is not None:
                await unit.append(result.transaction, event_id=event.id, at=now)
            await unit.add_outbox(
                [
                    OutboxMessage(e, self.stream_for(get_spec(e.type).stream))
                    for e in result.emitted
                ],
                at=now,
            )
        metrics.LEDGER_WRITE_SECONDS.observe(time.perf_counter() - started)
        if result.transaction is not None:
            currency = next(iter(sorted(result.transaction.currencies)))
            metrics.RECORDED.labels(result.transaction.kind.value, currency).inc()
        if result.emitted:
            self.on_commit()
        return result

    async def _apply(
        self, unit: LedgerUnit, event: CloudEvent, payload: Any, now: datetime
    ) -> Recorded:
        occurred = getattr(payload, "occurred_at", None) or event.time
        if isinstance(payload, PaymentSucceeded):
            return await self._succeeded(unit, event, payload, occurred, now)
        if isinstance(payload, PaymentFailed):
            check_currency(payload.currency)
            await unit.add_failure(
                provider=payload.provider,
                provider_payment_id=payload.provider_payment_id,
                amount=payload.amount,
                currency=payload.currency,
                failure_code=payload.failure_code,
                failure_message=payload.failure_message,
                occurred_at=occurred,
                event_id=event.id,
            )
            return Recorded("failure_recorded")
        if isinstance(payload, PaymentRefunded):
            return await self._refunded(unit, event, payload, occurred, now)
        if isinstance(payload, PaymentDisputeOpened):
            paid = await self._payment(unit, payload.provider, payload.provider_payment_id)
            if await unit.find(Kind.DISPUTE, payload.provider, payload.provider_dispute_id):
                return Recorded("already_recorded")
            return Recorded(
                "recorded",
                ledger.dispute_opened(
                    paid,
                    provider_dispute_id=payload.provider_dispute_id,
                    amount=payload.amount,
                    currency=payload.currency,
                    fee=payload.fee_amount,
                    occurred_at=occurred,
                    reason=payload.reason,
                ),
            )
        if isinstance(payload, PaymentDisputeClosed):
            dispute = await unit.dispute_facts(payload.provider, payload.provider_dispute_id)
            if dispute is None:
                raise OutOfOrder(
                    f"dispute {payload.provider_dispute_id} is not recorded (yet): its "
                    "payment.dispute.opened event may still be on its way"
                )
            if dispute.closed:
                return Recorded("already_recorded")
            return Recorded(
                "recorded",
                ledger.dispute_closed(
                    dispute,
                    won=payload.outcome == "won",
                    currency=payload.currency,
                    occurred_at=occurred,
                ),
            )
        if isinstance(payload, PayoutPaid):
            if await unit.find(Kind.PAYOUT, payload.provider, payload.provider_payout_id):
                return Recorded("already_recorded")
            return Recorded(
                "recorded",
                ledger.payout(
                    provider=payload.provider,
                    provider_payout_id=payload.provider_payout_id,
                    amount=payload.amount,
                    currency=payload.currency,
                    occurred_at=occurred,
                ),
            )
        log.warning("event type not handled by the ledger", event_type=event.type)
        return Recorded("ignored")

    async def _payment(self, unit: LedgerUnit, provider: str, payment_id: str) -> Any:
        paid = await unit.payment_facts(provider, payment_id)
        if paid is None:
            raise OutOfOrder(
                f"payment {payment_id} of {provider} is not recorded (yet): its "
                "payment.succeeded event may still be on its way"
            )
        return paid

    async def _succeeded(
        self,
        unit: LedgerUnit,
        event: CloudEvent,
        payload: PaymentSucceeded,
        occurred: datetime,
        now: datetime,
    ) -> Recorded:
        existing = await unit.find(Kind.PAYMENT, payload.provider, payload.provider_payment_id)
        if existing is not None:
            gross = -sum(p.amount for p in existing.postings if p.account == ledger.SALES)
            if gross != payload.amount or existing.postings[0].currency != payload.currency:
                log.warning(
                    "a payment already recorded was reported again with another amount",
                    provider_payment_id=payload.provider_payment_id,
                    recorded_transaction=existing.id,
                )
            return Recorded("already_recorded")
        transaction = ledger.payment(
            provider=payload.provider,
            provider_payment_id=payload.provider_payment_id,
            amount=payload.amount,
            currency=payload.currency,
            fee=payload.fee_amount,
            occurred_at=occurred,
            description=payload.description or "",
        )
        fee = payload.fee_amount if payload.fee_amount else None
        recorded = new_event(
            PaymentRecorded(
                transaction_id=transaction.id,
                provider=payload.provider,
                provider_payment_id=payload.provider_payment_id,
                amount=payload.amount,
                currency=payload.currency,
                fee_amount=payload.fee_amount,
                net_amount=payload.amount - (fee or 0),
                customer_id=payload.customer_id,
                description=payload.description,
                metadata=payload.metadata,
                occurred_at=payload.occurred_at,
                recorded_at=now,
            ),
            cause=event,
            id=ledger.deterministic_id("payment.recorded.v1", transaction.id),
            source=SOURCE,
            subject=payload.provider_payment_id,
            time=now,
        )
        emitted = [recorded]
        address = receipt_address(payload.receipt_email, payload.metadata)
        if self.receipts and address is not None:
            emitted.append(
                new_event(
                    receipt(
                        to=address,
                        amount=payload.amount,
                        currency=payload.currency,
                        provider_payment_id=payload.provider_payment_id,
                        paid_at=occurred,
                        description=payload.description,
                    ),
                    cause=recorded,
                    id=ledger.deterministic_id("email.requested.v1", "receipt", transaction.id),
                    source=SOURCE,
                    subject=payload.provider_payment_id,
                    time=now,
                )
            )
        return Recorded("recorded", transaction, tuple(emitted))

    async def _refunded(
        self,
        unit: LedgerUnit,
        event: CloudEvent,
        payload: PaymentRefunded,
        occurred: datetime,
        now: datetime,
    ) -> Recorded:
        check_currency(payload.currency)
        paid = await self._payment(unit, payload.provider, payload.provider_payment_id)
        if await unit.find(Kind.REFUND, payload.provider, payload.provider_refund_id):
            return Recorded("already_recorded")
        transaction = ledger.refund(
            paid,
            provider_refund_id=payload.provider_refund_id,
            amount=payload.amount,
            currency=payload.currency,
            occurred_at=occurred,
            reason=payload.reason,
        )
        refunded_total = paid.refunded + payload.amount
        recorded = new_event(
            PaymentRefundRecorded(
                transaction_id=transaction.id,
                payment_transaction_id=paid.transaction_id,
                provider=payload.provider,
                provider_payment_id=payload.provider_payment_id,
                provider_refund_id=payload.provider_refund_id,
                amount=payload.amount,
                currency=payload.currency,
                refunded_total=refunded_total,
                remaining=paid.amount - refunded_total - paid.disputed,
                recorded_at=now,
            ),
            cause=event,
            id=ledger.deterministic_id("payment.refund.recorded.v1", transaction.id),
            source=SOURCE,
            subject=payload.provider_payment_id,
            time=now,
        )
        return Recorded("recorded", transaction, (recorded,))


def _duration(ms: int) -> str:
    """A wait for a log line or a dead-letter message: ``850 ms``, ``42.0 s``, ``3 h 05 min``."""
    if ms < 1_000:
        return f"{ms} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    minutes = ms // 60_000
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"
