"""The whole service on a real Redis: events in, ledger and outbox, events out, API, metrics."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from riverbed import keys
from riverbed.publisher import Publisher
from riverbed.testing import fast_settings, wait_for
from riverbed_contracts import CloudEvent, event_from_entry
from riverbed_payments.domain import ledger
from riverbed_payments.domain.ledger import Kind
from riverbed_payments.testing import refunded, succeeded

pytestmark = pytest.mark.integration


async def events_on(client: redis.asyncio.Redis, stream: str) -> list[CloudEvent]:
    return [event_from_entry(f) for _, f in await client.xrange(keys.stream_key(stream))]


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def test_a_payment_event_becomes_a_ledger_transaction_a_recorded_event_and_a_receipt(
    start_service: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service()
    event = succeeded("pi_flow", 2500, fee_amount=100, receipt_email="ada@example.com")
    await Publisher(redis_client).publish(event, stream=running.stream("payment.succeeded"))

    async def recorded() -> list[CloudEvent]:
        return await events_on(redis_client, running.stream("payment.recorded"))

    await wait_for(recorded, what="payment.recorded on its stream")
    [out] = await recorded()
    txn_id = ledger.transaction_id(Kind.PAYMENT, "stripe", "pi_flow")
    assert (out.data["transaction_id"], out.causationid, out.source) == (
        txn_id, event.id, "urn:riverbed:payments",
    )  # fmt: skip
    await wait_for(
        lambda: events_on(redis_client, running.stream("email.requested")), what="receipt"
    )
    [mail] = await events_on(redis_client, running.stream("email.requested"))
    assert mail.data["to"] == "ada@example.com"
    assert mail.causationid == out.id

    answer = await running.client.get("/v1/payments/stripe/pi_flow")
    assert answer.status_code == 200, answer.text
    assert [t["id"] for t in answer.json()["transactions"]] == [txn_id]
    balances = (await running.client.get("/v1/balances", params={"currency": "EUR"})).json()
    assert {b["account"]: b["balance"] for b in balances["data"]} == {
        "assets:provider:stripe": 2400,
        "expenses:fees:stripe": 100,
        "income:sales": -2500,
    }
    await wait_for(lambda: _backlog_is_zero(running), what="outbox drained")
    metrics = (await running.client.get("/metrics")).text
    recorded_total = samples(metrics, "riverbed_payments_recorded_total")
    assert recorded_total[(("currency", "EUR"), ("type", "payment"))] >= 1
    assert samples(metrics, "riverbed_payments_outbox_backlog") == {(): 0.0}
    assert samples(metrics, "riverbed_payments_outbox_oldest_age_seconds") == {(): 0.0}
    assert samples(metrics, "riverbed_payments_ledger_write_seconds_count")[()] >= 1


async def _backlog_is_zero(running: Any) -> bool:
    backlog, _ = await running.service.container.relay.sample()
    return bool(backlog == 0)


async def test_an_invalid_currency_is_dead_lettered_with_the_reason(
    start_service: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service()
    stream = running.stream("payment.succeeded")
    bad = succeeded("pi_bad", 100, currency="XYZ")
    await Publisher(redis_client).publish(bad, stream=stream)

    async def dead() -> list[Any]:
        return list(await redis_client.xrange(keys.dead_letter_key(stream)))

    await wait_for(dead, what="the dead-letter entry")
    [(_, fields)] = await dead()
    assert fields[b"reason"] == b"permanent"
    assert b"XYZ" in fields[b"error_message"]
    assert b"ISO 4217" in fields[b"error_message"]
    assert (await running.client.get("/v1/payments/stripe/pi_bad")).status_code == 404


async def test_a_refund_published_before_its_payment_waits_for_it(
    start_service: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service()
    publisher = Publisher(redis_client)
    await publisher.publish(
        refunded("pi_r", "re_r", 300), stream=running.stream("payment.refunded")
    )
    await publisher.publish(succeeded("pi_r", 1000), stream=running.stream("payment.succeeded"))

    async def refund_recorded() -> list[CloudEvent]:
        return await events_on(redis_client, running.stream("payment.refund.recorded"))

    await wait_for(refund_recorded, what="the refund recorded after its payment")
    [out] = await refund_recorded()
    assert (out.data["refunded_total"], out.data["remaining"]) == (300, 700)


def rejected(reason: str) -> float:
    # the process-wide registry: tests compare it with a reading taken before they act
    return REGISTRY.get_sample_value("riverbed_payments_rejected_total", {"reason": reason}) or 0


async def test_a_refund_held_back_longer_than_the_delivery_limit_still_meets_its_payment(
    start_service: Any, redis_client: redis.asyncio.Redis
) -> None:
    max_deliveries = 5
    running = await start_service(
        out_of_order_retry_ms=20,  # ms: tries come fast, so the limit is passed in a second
        consumer_settings=fast_settings(max_deliveries=max_deliveries),
    )
    publisher = Publisher(redis_client)
    refunds, payments = running.stream("payment.refunded"), running.stream("payment.succeeded")
    put_back_before = rejected("out_of_order")
    await publisher.publish(refunded("pi_held", "re_held", 300), stream=refunds)

    async def dead(stream: str) -> list[Any]:
        return list(await redis_client.xrange(keys.dead_letter_key(stream)))

    async def tried_past_the_limit_or_dead() -> bool:
        tries = rejected("out_of_order") - put_back_before
        return tries > max_deliveries or bool(await dead(refunds))

    # the payment is held back until the refund was tried more often than the delivery
    # limit: counted as deliveries, those tries would have dead-lettered it
    await wait_for(tried_past_the_limit_or_dead, what=f"more than {max_deliveries} tries")
    assert await dead(refunds) == [], "the refund was dead-lettered while it waited"
    await publisher.publish(succeeded("pi_held", 1000), stream=payments)

    async def refund_recorded() -> list[CloudEvent]:
        return await events_on(redis_client, running.stream("payment.refund.recorded"))

    await wait_for(refund_recorded, what="the refund recorded once its payment came")
    [out] = await refund_recorded()
    assert (out.data["refunded_total"], out.data["remaining"]) == (300, 700)
    payment = (await running.client.get("/v1/payments/stripe/pi_held")).json()
    assert sorted(t["kind"] for t in payment["transactions"]) == ["payment", "refund"]
    balances = (await running.client.get("/v1/balances", params={"currency": "EUR"})).json()
    by_account = {b["account"]: b["balance"] for b in balances["data"]}
    assert by_account == {
        "assets:provider:stripe": 700,
        "income:refunds": 300,
        "income:sales": -1000,
    }
    assert sum(by_account.values()) == 0, "the ledger balances"
    assert await dead(refunds) == []
    assert await dead(payments) == []


async def test_a_refund_whose_payment_never_comes_is_dead_lettered_past_the_wait_bound(
    start_service: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service(out_of_order_retry_ms=20, out_of_order_max_wait_s=0.5)
    refunds = running.stream("payment.refunded")
    put_back_before = rejected("out_of_order")
    orphan = refunded("pi_never", "re_orphan", 300)
    await Publisher(redis_client).publish(orphan, stream=refunds)

    async def dead() -> list[Any]:
        return list(await redis_client.xrange(keys.dead_letter_key(refunds)))

    await wait_for(dead, what="the refund dead-lettered after waiting 0.5 s")
    [(_, fields)] = await dead()
    assert fields[b"reason"] == b"permanent"
    message = fields[b"error_message"].decode()
    assert f"payment.refunded.v1 {orphan.id}: gave up after waiting" in message
    assert "PAYMENTS_OUT_OF_ORDER_MAX_WAIT_S is 500 ms" in message
    assert "payment pi_never of stripe is not recorded (yet)" in message
    assert fields[b"attempts"] == b"1", "the tries while it waited did not count"
    assert rejected("out_of_order") - put_back_before > fast_settings().max_deliveries
    answer = await running.client.get("/v1/payments/stripe/pi_never")
    assert answer.status_code == 404


async def test_the_api_needs_the_key(start_service: Any) -> None:
    running = await start_service()
    answer = await running.client.get("/v1/balances", headers={"Authorization": "Bearer nope"})
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    missing = await running.client.get("/v1/transactions/nope")
    assert missing.status_code == 404
    assert missing.json()["title"] == "Unknown transaction"
