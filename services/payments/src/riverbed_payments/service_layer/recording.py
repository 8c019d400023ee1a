"""Recording payment events in the ledger, exactly once in effect.

One event, one database transaction: claim (consumer group, event id) in
``processed_messages``; build the ledger transaction the event implies (the domain
checks amounts, currencies and balance); store it; queue the events it causes in the
outbox; commit. The runtime acknowledges the stream entry only after the handler
returns, i.e. after the commit. A redelivered event finds its claim and changes
nothing; a second event about the same provider object (same provider id, new event
id) finds the transaction and changes nothing either — the unique constraint on
(provider, kind, provider id) settles a race between the two.

An event that comes before the payment (or dispute) it refers to waits for it:
``service_layer/out_of_order.py`` says how long and when it gives up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from riverbed.errors import PermanentError
from riverbed_contracts import CloudEvent, PaymentFailed, PaymentRefunded, PaymentSucceeded
from riverbed_contracts.payments import (
    PaymentDisputeClosed,
    PaymentDisputeOpened,
    PaymentRecorded,
    PaymentRefundRecorded,
    PayoutPaid,
)
from riverbed_payments import metrics
from riverbed_payments.domain import ledger
from riverbed_payments.domain.currency import InvalidAmount, check_currency
from riverbed_payments.domain.ledger import Kind, PaymentFacts, Transaction, UnbalancedTransaction
from riverbed_payments.domain.receipt import receipt, receipt_address
from riverbed_payments.service_layer.events import own_event, routed
from riverbed_payments.service_layer.out_of_order import OutOfOrder, OutOfOrderWait
from riverbed_payments.service_layer.ports import Clock, Ledger, LedgerUnit

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Recorded:
    """What handling one event did."""

    outcome: str  # recorded | already_processed | already_recorded | failure_recorded | ignored
    transaction: Transaction | None = None
    emitted: tuple[CloudEvent, ...] = ()


ALREADY_RECORDED = Recorded("already_recorded")


class Recorder:
    """Records payment events in the ledger (see the module doc)."""

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
        self.out_of_order = OutOfOrderWait(
            clock, out_of_order_retry_ms, int(out_of_order_max_wait_s * 1000)
        )
        self.on_commit = on_commit

    async def handle(
        self, event: CloudEvent, payload: Any, *, stream: str, first_seen_ms: int
    ) -> Recorded:
        """Record ``event`` as its consumer delivered it, in the runtime's terms: an event
        the ledger refuses is a PermanentError, one that came too early a RetryLater (or,
        once it has waited past the bound, a PermanentError). The outbox carries what it
        emits."""
        try:
            result = await self.record(event, payload, stream=stream)
        except (InvalidAmount, UnbalancedTransaction) as error:
            metrics.REJECTED.labels("invalid_amount").inc()
            raise PermanentError(f"{event.type}: {error}") from error
        except OutOfOrder as error:
            raise self.out_of_order.verdict(event, first_seen_ms, error) from error
        metrics.HANDLED.labels(result.outcome).inc()
        if result.outcome in ("already_processed", "already_recorded"):
            log.info("payment event changes nothing", outcome=result.outcome)
        return result

    async def record(self, event: CloudEvent, payload: Any, *, stream: str) -> Recorded:
        """Apply ``event`` to the ledger in one transaction, at most once per group."""
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
            await unit.add_outbox([routed(e, self.stream_for) for e in result.emitted], at=now)
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
            return await _failed(unit, event, payload, occurred)
        if isinstance(payload, PaymentRefunded):
            return await _refunded(unit, event, payload, occurred, now)
        if isinstance(payload, PaymentDisputeOpened):
            return await _dispute_opened(unit, payload, occurred)
        if isinstance(payload, PaymentDisputeClosed):
            return await _dispute_closed(unit, payload, occurred)
        if isinstance(payload, PayoutPaid):
            return await _payout_paid(unit, payload, occurred)
        log.warning("event type not handled by the ledger", event_type=event.type)
        return Recorded("ignored")

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
            return ALREADY_RECORDED
        transaction = ledger.payment(
            provider=payload.provider,
            provider_payment_id=payload.provider_payment_id,
            amount=payload.amount,
            currency=payload.currency,
            fee=payload.fee_amount,
            occurred_at=occurred,
            description=payload.description or "",
        )
        recorded = _payment_recorded(event, payload, transaction, now)
        emitted = [recorded]
        address = receipt_address(payload.receipt_email, payload.metadata)
        if self.receipts and address is not None:
            emitted.append(
                _receipt_requested(recorded, payload, address, transaction, occurred, now)
            )
        return Recorded("recorded", transaction, tuple(emitted))


def _payment_recorded(
    event: CloudEvent, payload: PaymentSucceeded, transaction: Transaction, now: datetime
) -> CloudEvent:
    fee = payload.fee_amount if payload.fee_amount else None
    return own_event(
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
        "payment.recorded.v1",
        transaction.id,
        cause=event,
        subject=payload.provider_payment_id,
        at=now,
    )


def _receipt_requested(
    recorded: CloudEvent,
    payload: PaymentSucceeded,
    address: str,
    transaction: Transaction,
    occurred: datetime,
    now: datetime,
) -> CloudEvent:
    """The email service's request for the payment's receipt (caused by ``recorded``)."""
    return own_event(
        receipt(
            to=address,
            amount=payload.amount,
            currency=payload.currency,
            provider_payment_id=payload.provider_payment_id,
            paid_at=occurred,
            description=payload.description,
        ),
        "email.requested.v1",
        "receipt",
        transaction.id,
        cause=recorded,
        subject=payload.provider_payment_id,
        at=now,
    )


async def _failed(
    unit: LedgerUnit, event: CloudEvent, payload: PaymentFailed, occurred: datetime
) -> Recorded:
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


async def _recorded_payment(unit: LedgerUnit, provider: str, payment_id: str) -> PaymentFacts:
    """The payment a refund or dispute refers to; OutOfOrder while it is not recorded."""
    paid = await unit.payment_facts(provider, payment_id)
    if paid is None:
        raise OutOfOrder(
            f"payment {payment_id} of {provider} is not recorded (yet): its "
            "payment.succeeded event may still be on its way"
        )
    return paid


async def _refunded(
    unit: LedgerUnit, event: CloudEvent, payload: PaymentRefunded, occurred: datetime, now: datetime
) -> Recorded:
    check_currency(payload.currency)
    paid = await _recorded_payment(unit, payload.provider, payload.provider_payment_id)
    if await unit.find(Kind.REFUND, payload.provider, payload.provider_refund_id):
        return ALREADY_RECORDED
    transaction = ledger.refund(
        paid,
        provider_refund_id=payload.provider_refund_id,
        amount=payload.amount,
        currency=payload.currency,
        occurred_at=occurred,
        reason=payload.reason,
    )
    refunded_total = paid.refunded + payload.amount
    recorded = own_event(
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
        "payment.refund.recorded.v1",
        transaction.id,
        cause=event,
        subject=payload.provider_payment_id,
        at=now,
    )
    return Recorded("recorded", transaction, (recorded,))


async def _dispute_opened(
    unit: LedgerUnit, payload: PaymentDisputeOpened, occurred: datetime
) -> Recorded:
    paid = await _recorded_payment(unit, payload.provider, payload.provider_payment_id)
    if await unit.find(Kind.DISPUTE, payload.provider, payload.provider_dispute_id):
        return ALREADY_RECORDED
    transaction = ledger.dispute_opened(
        paid,
        provider_dispute_id=payload.provider_dispute_id,
        amount=payload.amount,
        currency=payload.currency,
        fee=payload.fee_amount,
        occurred_at=occurred,
        reason=payload.reason,
    )
    return Recorded("recorded", transaction)


async def _dispute_closed(
    unit: LedgerUnit, payload: PaymentDisputeClosed, occurred: datetime
) -> Recorded:
    dispute = await unit.dispute_facts(payload.provider, payload.provider_dispute_id)
    if dispute is None:
        raise OutOfOrder(
            f"dispute {payload.provider_dispute_id} is not recorded (yet): its "
            "payment.dispute.opened event may still be on its way"
        )
    if dispute.closed:
        return ALREADY_RECORDED
    transaction = ledger.dispute_closed(
        dispute, won=payload.outcome == "won", currency=payload.currency, occurred_at=occurred
    )
    return Recorded("recorded", transaction)


async def _payout_paid(unit: LedgerUnit, payload: PayoutPaid, occurred: datetime) -> Recorded:
    if await unit.find(Kind.PAYOUT, payload.provider, payload.provider_payout_id):
        return ALREADY_RECORDED
    transaction = ledger.payout(
        provider=payload.provider,
        provider_payout_id=payload.provider_payout_id,
        amount=payload.amount,
        currency=payload.currency,
        occurred_at=occurred,
    )
    return Recorded("recorded", transaction)
