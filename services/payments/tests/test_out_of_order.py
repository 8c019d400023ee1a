"""Events that arrive before what they refer to: put back without counting as a delivery
while they are within the wait bound, dead-lettered past it. No I/O: a ledger that has
recorded nothing, and a clock the test moves."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from riverbed.consumer import Message
from riverbed.errors import PermanentError, RetryLater
from riverbed.testing import message_for
from riverbed_contracts import CloudEvent
from riverbed_payments.entrypoints.handlers import payment_events
from riverbed_payments.service_layer.out_of_order import (
    OUT_OF_ORDER_MAX_RETRY_MS,
    out_of_order_delay_ms,
)
from riverbed_payments.service_layer.recording import Recorder
from riverbed_payments.settings import PaymentsSettings
from riverbed_payments.testing import T0, dispute_closed, refunded

BASE_MS = 100
MAX_WAIT_S = 3600.0  # 1 h
T0_MS = int(T0.timestamp() * 1000)


class NothingRecorded:
    """A unit of work on a ledger that holds no payment and no dispute."""

    async def claim_message(self, group: str, event_id: str, **_: Any) -> bool:
        return True

    async def payment_facts(self, provider: str, provider_payment_id: str) -> None:
        return None

    async def dispute_facts(self, provider: str, provider_dispute_id: str) -> None:
        return None


class EmptyLedger:
    @asynccontextmanager
    async def unit(self) -> AsyncIterator[NothingRecorded]:
        yield NothingRecorded()


@dataclasses.dataclass
class FakeClock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += timedelta(milliseconds=ms)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def recorder(clock: FakeClock) -> Recorder:
    return Recorder(
        EmptyLedger(),  # type: ignore[arg-type]
        group="payments",
        stream_for=lambda s: s,
        clock=clock,
        out_of_order_retry_ms=BASE_MS,
        out_of_order_max_wait_s=MAX_WAIT_S,
    )


def first_seen_at_t0(event: CloudEvent, attempt: int = 1) -> Message[Any]:
    """The message as the runtime delivers it when the group first received it at T0."""
    return dataclasses.replace(message_for(event, attempt=attempt), first_seen_ms=T0_MS)


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("riverbed_payments_rejected_total", {"reason": reason}) or 0


async def deferral(recorder: Recorder, message: Message[Any]) -> RetryLater:
    with pytest.raises(RetryLater) as caught:
        await payment_events(recorder)(message)
    return caught.value


async def test_an_early_refund_is_put_back_without_using_up_a_delivery_until_the_bound(
    recorder: Recorder, clock: FakeClock
) -> None:
    message = first_seen_at_t0(refunded("pi_late", "re_1", 100))
    before = rejected("out_of_order")
    waits = []
    # far more tries than any delivery limit, each after the wait it asked for
    for attempt in range(1, 200):
        clock_ms = int((clock.now - T0).total_seconds() * 1000)
        if clock_ms > MAX_WAIT_S * 1000:
            break
        put_back = await deferral(recorder, dataclasses.replace(message, attempt=attempt))
        assert put_back.counts_as_delivery is False
        assert "payment pi_late of stripe is not recorded" in str(put_back)
        waits.append(put_back.delay_ms)
        clock.advance(put_back.delay_ms)
    assert waits[:2] == [BASE_MS, BASE_MS], "a payment a moment late: tried at the base pace"
    assert max(waits) == OUT_OF_ORDER_MAX_RETRY_MS, "hours late: polled every 5 min at most"
    assert waits == sorted(waits[:-1]) + waits[-1:], "the wait only grows, but for the last"
    assert rejected("out_of_order") - before == len(waits)
    # the last wait was cut short, so the try just past the bound is the one that gives up
    assert clock.now - T0 == timedelta(seconds=MAX_WAIT_S, milliseconds=1)


async def test_past_the_bound_it_is_a_permanent_error_saying_what_it_waited_for_and_how_long(
    recorder: Recorder, clock: FakeClock
) -> None:
    event = refunded("pi_never", "re_1", 100)
    clock.advance(int(MAX_WAIT_S * 1000))
    at_the_bound = await deferral(recorder, first_seen_at_t0(event))
    assert (at_the_bound.delay_ms, at_the_bound.counts_as_delivery) == (1, False)
    clock.advance(1)
    before = rejected("out_of_order_expired")
    with pytest.raises(PermanentError) as caught:
        await payment_events(recorder)(first_seen_at_t0(event))
    text = str(caught.value)
    assert text.startswith(f"payment.refunded.v1 {event.id}: gave up after waiting 60 min")
    assert "PAYMENTS_OUT_OF_ORDER_MAX_WAIT_S is 60 min" in text
    assert "payment pi_never of stripe is not recorded (yet)" in text
    assert rejected("out_of_order_expired") - before == 1


async def test_a_dispute_closing_before_its_opening_waits_the_same_way(
    recorder: Recorder, clock: FakeClock
) -> None:
    event = dispute_closed("pi_1", "dp_early", 100, "won")
    put_back = await deferral(recorder, first_seen_at_t0(event))
    assert (put_back.delay_ms, put_back.counts_as_delivery) == (BASE_MS, False)
    clock.advance(int(MAX_WAIT_S * 1000) + 1)
    with pytest.raises(PermanentError, match="dispute dp_early is not recorded"):
        await payment_events(recorder)(first_seen_at_t0(event))


async def test_a_first_seen_time_ahead_of_the_clock_counts_as_no_wait(
    recorder: Recorder, clock: FakeClock
) -> None:
    clock.advance(-5_000)  # Redis's clock (first seen) 5 s ahead of this host's
    put_back = await deferral(recorder, first_seen_at_t0(refunded("pi_1", "re_1", 100)))
    assert (put_back.delay_ms, put_back.counts_as_delivery) == (BASE_MS, False)


async def test_without_a_first_seen_time_it_falls_back_to_retries_that_count(
    recorder: Recorder, clock: FakeClock
) -> None:
    clock.advance(int(MAX_WAIT_S * 1000) * 10)
    unknown = message_for(refunded("pi_1", "re_1", 100))  # first_seen_ms 0: not reported
    assert unknown.first_seen_ms == 0
    retry = await deferral(recorder, unknown)
    assert (retry.delay_ms, retry.counts_as_delivery) == (BASE_MS, True)


@pytest.mark.parametrize(
    ("waited_ms", "expected_ms"),
    [
        (0, 5_000),
        (19_999, 5_000),  # a quarter of it is still under the base
        (40_000, 10_000),
        (1_200_000, 300_000),  # 20 min waited: the 5 min cap
        (86_400_000, 300_000),
    ],
)
def test_the_wait_is_a_quarter_of_the_time_waited_between_the_base_and_the_cap(
    waited_ms: int, expected_ms: int
) -> None:
    assert out_of_order_delay_ms(waited_ms, base_ms=5_000, max_ms=300_000) == expected_ms


def test_a_base_above_the_cap_wins() -> None:
    assert out_of_order_delay_ms(10**9, base_ms=600_000, max_ms=300_000) == 600_000


def test_the_bound_defaults_to_a_day_reads_its_variable_and_must_be_positive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PAYMENTS_OUT_OF_ORDER_MAX_WAIT_S", raising=False)
    assert PaymentsSettings().out_of_order_max_wait_s == 86_400
    monkeypatch.setenv("PAYMENTS_OUT_OF_ORDER_MAX_WAIT_S", "90.5")
    assert PaymentsSettings().out_of_order_max_wait_s == 90.5
    for bad in ("0", "-1"):
        monkeypatch.setenv("PAYMENTS_OUT_OF_ORDER_MAX_WAIT_S", bad)
        with pytest.raises(ValidationError, match="greater than 0"):
            PaymentsSettings()
