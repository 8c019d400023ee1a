"""Retry delays: exponential with a cap, an explicit schedule, jitter within bounds."""

from __future__ import annotations

import random

import pytest

from riverbed.backoff import Backoff


def test_delays_double_from_the_base_until_the_cap() -> None:
    backoff = Backoff(base_ms=100, max_ms=1_000, jitter=0)
    assert [backoff.delay_ms(n) for n in range(1, 7)] == [100, 200, 400, 800, 1_000, 1_000]


def test_a_huge_attempt_number_stays_at_the_cap() -> None:
    assert Backoff(base_ms=100, max_ms=5_000, jitter=0).delay_ms(10_000) == 5_000


def test_an_explicit_schedule_is_followed_and_its_last_step_repeated() -> None:
    smtp_like = Backoff(schedule=(60_000, 300_000, 900_000), jitter=0)
    assert [smtp_like.delay_ms(n) for n in (1, 2, 3, 4, 9)] == [
        60_000,
        300_000,
        900_000,
        900_000,
        900_000,
    ]


@pytest.mark.parametrize("attempt", [1, 3, 8])
def test_jitter_spreads_delays_within_its_fraction(attempt: int) -> None:
    backoff = Backoff(base_ms=1_000, max_ms=60_000, jitter=0.2)
    nominal = Backoff(base_ms=1_000, max_ms=60_000, jitter=0).delay_ms(attempt)
    rng = random.Random(7)
    delays = {backoff.delay_ms(attempt, rng) for _ in range(200)}
    assert min(delays) >= nominal * 0.8
    assert max(delays) <= nominal * 1.2
    assert len(delays) > 50, "jitter must actually spread the retries"
