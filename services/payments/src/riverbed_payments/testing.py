"""Helpers for tests of the payments service and of flows through it (no I/O here).

Events as the gateway would publish them, and settlement reports in the documented
CSV layout, so that tests elsewhere (``tests/test_payment_flow.py``) build the same.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from riverbed_contracts import CloudEvent, PaymentFailed, PaymentRefunded, PaymentSucceeded
from riverbed_contracts.payments import PaymentDisputeClosed, PaymentDisputeOpened, PayoutPaid
from riverbed_contracts.registry import new_event

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SOURCE = "urn:riverbed:test"
HEADER = ("id", "type", "source", "amount", "fee", "net", "currency", "payout_id", "created")


def succeeded(pid: str, amount: int = 1999, currency: str = "EUR", **fields: Any) -> CloudEvent:
    fields.setdefault("occurred_at", T0)
    payload = PaymentSucceeded(
        provider=fields.pop("provider", "stripe"),
        provider_payment_id=pid,
        amount=amount,
        currency=currency,
        **fields,
    )
    return new_event(payload, source=SOURCE, subject=pid)


def failed(pid: str, amount: int = 1999, currency: str = "EUR", **fields: Any) -> CloudEvent:
    fields.setdefault("failure_code", "card_declined")
    payload = PaymentFailed(
        provider="stripe", provider_payment_id=pid, amount=amount, currency=currency, **fields
    )
    return new_event(payload, source=SOURCE, subject=pid)


def refunded(pid: str, rid: str, amount: int, currency: str = "EUR") -> CloudEvent:
    payload = PaymentRefunded(
        provider="stripe",
        provider_payment_id=pid,
        provider_refund_id=rid,
        amount=amount,
        currency=currency,
        occurred_at=T0,
    )
    return new_event(payload, source=SOURCE, subject=pid)


def dispute_opened(
    pid: str, did: str, amount: int, fee: int | None = None, currency: str = "EUR"
) -> CloudEvent:
    payload = PaymentDisputeOpened(
        provider="stripe",
        provider_payment_id=pid,
        provider_dispute_id=did,
        amount=amount,
        currency=currency,
        fee_amount=fee,
        occurred_at=T0,
    )
    return new_event(payload, source=SOURCE, subject=pid)


def dispute_closed(pid: str, did: str, amount: int, outcome: Literal["won", "lost"]) -> CloudEvent:
    payload = PaymentDisputeClosed(
        provider="stripe",
        provider_payment_id=pid,
        provider_dispute_id=did,
        amount=amount,
        currency="EUR",
        outcome=outcome,
        occurred_at=T0,
    )
    return new_event(payload, source=SOURCE, subject=pid)


def payout(po: str, amount: int, currency: str = "EUR") -> CloudEvent:
    payload = PayoutPaid(
        provider="stripe", provider_payout_id=po, amount=amount, currency=currency, occurred_at=T0
    )
    return new_event(payload, source=SOURCE, subject=po)


def major(minor: int, places: int = 2) -> str:
    """Minor units as the report's decimal text: 1999 -> "19.99", -500 -> "-5.00"."""
    if places == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    units, cents = divmod(abs(minor), 10**places)
    return f"{sign}{units}.{cents:0{places}d}"


def report_line(
    txn: str,
    kind: str,
    source: str,
    amount: int,
    fee: int = 0,
    *,
    currency: str = "eur",
    payout_id: str = "",
    created: str = "2024-05-01 12:00:00",
) -> tuple[str, ...]:
    return (
        txn,
        kind,
        source,
        major(amount),
        major(fee),
        major(amount - fee),
        currency,
        payout_id,
        created,
    )


def report_csv(lines: Iterable[tuple[str, ...]], header: tuple[str, ...] = HEADER) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(lines)
    return out.getvalue().encode()
