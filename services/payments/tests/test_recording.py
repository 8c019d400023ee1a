"""Recording payment events in the ledger, exactly once in effect, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from riverbed.errors import PermanentError, RetryLater
from riverbed.testing import message_for
from riverbed_contracts import CloudEvent
from riverbed_payments.adapters.ledger import SqlLedger
from riverbed_payments.adapters.tables import outbox
from riverbed_payments.domain import ledger
from riverbed_payments.domain.ledger import Kind
from riverbed_payments.entrypoints.handlers import payment_events
from riverbed_payments.service_layer.recording import Recorder
from riverbed_payments.testing import (
    T0,
    dispute_closed,
    dispute_opened,
    failed,
    payout,
    refunded,
    succeeded,
)

PROVIDER = ledger.provider_balance("stripe")


@pytest.fixture
def recorder(engine: AsyncEngine) -> Recorder:
    return Recorder(
        SqlLedger(engine),
        group="payments",
        stream_for=lambda s: f"{s}.routed",
        clock=lambda: T0,
        out_of_order_retry_ms=123,
    )


async def handle(recorder: Recorder, event: CloudEvent) -> None:
    # first received by the group at the recorder's "now": an early event has waited 0 ms
    first_seen_ms = int(T0.timestamp() * 1000)
    message = dataclasses.replace(message_for(event), first_seen_ms=first_seen_ms)
    await payment_events(recorder)(message)


async def balances(engine: AsyncEngine) -> dict[tuple[str, str], int]:
    return {(b.account, b.currency): b.balance for b in await SqlLedger(engine).balances()}


async def queued(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(outbox).order_by(outbox.c.id))
        return [dict(r._mapping) for r in rows]


async def test_a_payment_is_recorded_with_its_events_queued_in_the_same_transaction(
    engine: AsyncEngine, recorder: Recorder
) -> None:
    event = succeeded("pi_1", 1999, fee_amount=59, receipt_email="ada@example.com")
    await handle(recorder, event)
    assert await balances(engine) == {
        (PROVIDER, "EUR"): 1940,
        (ledger.provider_fees("stripe"), "EUR"): 59,
        (ledger.SALES, "EUR"): -1999,
    }
    rows = await queued(engine)
    assert [(r["type"], r["stream"]) for r in rows] == [
        ("payment.recorded.v1", "payment.recorded.routed"),
        ("email.requested.v1", "email.requested.routed"),
    ]
    txn_id = ledger.transaction_id(Kind.PAYMENT, "stripe", "pi_1")
    assert rows[0]["event_id"] == ledger.deterministic_id("payment.recorded.v1", txn_id)
    recorded = CloudEvent.model_validate_json(rows[0]["event"])
    assert recorded.data["net_amount"] == 1940
    assert recorded.causationid == event.id
    mail = CloudEvent.model_validate_json(rows[1]["event"])
    assert mail.data["to"] == "ada@example.com"
    assert "19.99 EUR" in mail.data["subject"]
    assert await SqlLedger(engine).processed("payments", [event.id]) == {event.id: "recorded"}


async def test_a_redelivered_event_and_a_second_event_for_the_same_payment_change_nothing(
    engine: AsyncEngine, recorder: Recorder
) -> None:
    event = succeeded("pi_1", 1999)
    await handle(recorder, event)
    before = (await balances(engine), len(await queued(engine)))
    await handle(recorder, event)  # redelivered: same event id
    twin = succeeded("pi_1", 1999)  # published again by someone: a new event id
    assert twin.id != event.id
    await handle(recorder, twin)
    assert (await balances(engine), len(await queued(engine))) == before
    assert await SqlLedger(engine).processed("payments", [event.id, twin.id]) == {
        event.id: "recorded",
        twin.id: "already_recorded",
    }


@pytest.mark.parametrize(
    ("event", "why"),
    [
        (succeeded("pi_1", 1999, currency="XYZ"), "not an active ISO 4217 currency"),
        (succeeded("pi_1", 100, fee_amount=101), "fee_amount 101"),
        (failed("pi_1", currency="XXX"), "ISO 4217"),
    ],
    ids=["unknown-currency", "fee-over-amount", "failed-unknown-currency"],
)
async def test_invalid_amounts_and_currencies_are_permanent_errors_that_change_nothing(
    engine: AsyncEngine, recorder: Recorder, event: CloudEvent, why: str
) -> None:
    with pytest.raises(PermanentError, match=why):
        await handle(recorder, event)
    assert await balances(engine) == {}
    assert await SqlLedger(engine).processed("payments", [event.id]) == {}


async def test_refunds_reverse_the_payment_until_nothing_is_left(
    engine: AsyncEngine, recorder: Recorder
) -> None:
    early = refunded("pi_1", "re_0", 100)
    with pytest.raises(RetryLater, match="not recorded") as caught:
        await handle(recorder, early)  # the payment's event is still on its way
    assert (caught.value.delay_ms, caught.value.counts_as_delivery) == (123, False)
    await handle(recorder, succeeded("pi_1", 1999))
    await handle(recorder, early)
    await handle(recorder, refunded("pi_1", "re_1", 1899))
    with pytest.raises(PermanentError, match="exceeds what is left"):
        await handle(recorder, refunded("pi_1", "re_2", 1))
    with pytest.raises(PermanentError, match="the payment is in EUR"):
        await handle(recorder, refunded("pi_1", "re_3", 1, currency="USD"))
    assert (await balances(engine))[(PROVIDER, "EUR")] == 0
    assert (await balances(engine))[(ledger.REFUNDS, "EUR")] == 1999
    last = CloudEvent.model_validate_json((await queued(engine))[-1]["event"])
    assert last.type == "payment.refund.recorded.v1"
    assert (last.data["refunded_total"], last.data["remaining"]) == (1999, 0)
    payment = ledger.transaction_id(Kind.PAYMENT, "stripe", "pi_1")
    refunds = [t for t in await SqlLedger(engine).for_payment("stripe", "pi_1")
               if t.kind is Kind.REFUND]  # fmt: skip
    assert {t.reverses_id for t in refunds} == {payment}


async def test_two_refunds_racing_for_the_same_money_cannot_both_pass(
    engine: AsyncEngine, recorder: Recorder
) -> None:
    await handle(recorder, succeeded("pi_1", 1000))
    results = await asyncio.gather(
        handle(recorder, refunded("pi_1", "re_a", 600)),
        handle(recorder, refunded("pi_1", "re_b", 600)),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "PermanentError"]
    assert (await balances(engine))[(ledger.REFUNDS, "EUR")] == 600


async def test_disputes_withdraw_and_a_won_dispute_reinstates_a_lost_one_writes_off(
    engine: AsyncEngine, recorder: Recorder
) -> None:
    await handle(recorder, succeeded("pi_1", 1999))
    await handle(recorder, succeeded("pi_2", 1000))
    with pytest.raises(RetryLater):
        await handle(recorder, dispute_closed("pi_1", "dp_1", 1999, "won"))
    await handle(recorder, dispute_opened("pi_1", "dp_1", 1999, fee=1500))
    await handle(recorder, dispute_opened("pi_2", "dp_2", 1000))
    with pytest.raises(PermanentError, match="exceeds"):
        await handle(recorder, refunded("pi_2", "re_1", 1))  # all of it is disputed
    assert (await balances(engine))[(ledger.disputed("stripe"), "EUR")] == 2999
    await handle(recorder, dispute_closed("pi_1", "dp_1", 1999, "won"))
    await handle(recorder, dispute_closed("pi_2", "dp_2", 1000, "lost"))
    await handle(recorder, dispute_closed("pi_2", "dp_2", 1000, "won"))  # too late: closed
    found = await balances(engine)
    assert found[(ledger.disputed("stripe"), "EUR")] == 0
    assert found[(ledger.DISPUTE_LOSSES, "EUR")] == 1000
    assert found[(PROVIDER, "EUR")] == 1999 - 1500, "the dispute fee stays spent"
    await handle(recorder, refunded("pi_1", "re_2", 1999))  # reinstated: refundable again


async def test_payouts_and_failed_payments_are_recorded(
    engine: AsyncEngine, recorder: Recorder
) -> None:
    await handle(recorder, succeeded("pi_1", 1999))
    await handle(recorder, payout("po_1", 1500))
    found = await balances(engine)
    assert (found[(ledger.BANK, "EUR")], found[(PROVIDER, "EUR")]) == (1500, 499)
    event = failed("pi_9", failure_code="card_declined")
    await handle(recorder, event)
    [failure] = await SqlLedger(engine).failures("stripe", "pi_9")
    assert (failure["failure_code"], failure["event_id"]) == ("card_declined", event.id)
    assert sum(found.values()) == 0, "the whole ledger sums to zero"
