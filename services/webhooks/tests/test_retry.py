"""The retry schedule, Retry-After, and what each answer means."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from riverbed_webhooks.domain.health import should_disable
from riverbed_webhooks.domain.retry import (
    STANDARD_SCHEDULE_MS,
    RetrySchedule,
    Verdict,
    deferral_delay_ms,
    next_delay_ms,
    parse_retry_after,
    status_class,
    verdict_for,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_the_default_is_the_standard_webhooks_schedule_of_ten_attempts() -> None:
    schedule = RetrySchedule(jitter=0)
    assert schedule.max_attempts == 10
    delays = [schedule.delay_after(n) for n in range(1, 10)]
    assert delays == [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000,
                      50_400_000, 72_000_000, 86_400_000]  # fmt: skip
    assert schedule.delay_after(10) is None


def test_jitter_spreads_a_delay_within_its_fraction() -> None:
    schedule = RetrySchedule(STANDARD_SCHEDULE_MS, jitter=0.1)
    rng = random.Random(7)
    seen = {schedule.delay_after(2, rng) for _ in range(200)}
    assert all(d is not None and 270_000 <= d <= 330_000 for d in seen)
    assert len(seen) > 10


def test_attempts_are_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        RetrySchedule().delay_after(0)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (299, Verdict.DELIVERED),
        (301, Verdict.RETRY),
        (302, Verdict.RETRY),
        (400, Verdict.RETRY),
        (410, Verdict.GONE),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (None, Verdict.RETRY),
    ],
)
def test_only_2xx_succeeds_and_410_means_gone(status: int | None, verdict: Verdict) -> None:
    assert verdict_for(status) is verdict


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert parse_retry_after("120", NOW) == 120_000
    assert parse_retry_after(" 0 ", NOW) == 0
    later = (NOW + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(later, NOW) == 30_000
    earlier = (NOW - timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(earlier, NOW) == 0
    for junk in (None, "", "soon", "-5", "1.5"):
        assert parse_retry_after(junk, NOW) is None


def test_retry_after_replaces_the_schedule_on_429_and_503_only_and_is_capped() -> None:
    schedule = RetrySchedule((5_000, 300_000), jitter=0)

    def delay(status: int, retry_after: int | None, cap: int = 3_600_000) -> int | None:
        return next_delay_ms(
            schedule, 1, status_code=status, retry_after_ms=retry_after, retry_after_cap_ms=cap
        )

    assert delay(429, 60_000) == 60_000
    assert delay(503, 1_000) == 1_000
    assert delay(500, 60_000) == 5_000
    assert delay(429, None) == 5_000
    assert delay(429, 10**12, cap=7_200_000) == 7_200_000


def test_no_retry_after_the_last_attempt_even_with_retry_after() -> None:
    schedule = RetrySchedule((5_000,), jitter=0)
    assert (
        next_delay_ms(schedule, 2, status_code=429, retry_after_ms=1, retry_after_cap_ms=10) is None
    )


def test_a_deferral_waits_as_long_as_the_task_has_waited_within_bounds_and_spread() -> None:
    rng = random.Random(1)
    first = [deferral_delay_ms(0, base_ms=100, max_ms=1_000, rng=rng) for _ in range(100)]
    assert all(50 <= d <= 150 for d in first), "a fresh task waits the base"
    assert len(set(first)) > 50, "spread, not in lockstep"
    assert all(
        200 <= deferral_delay_ms(400, base_ms=100, max_ms=1_000, rng=rng) <= 600 for _ in range(100)
    ), "a task that waited 400 ms waits about 400 ms more: its age doubles"
    assert all(
        500 <= deferral_delay_ms(waited, base_ms=100, max_ms=1_000, rng=rng) <= 1_500
        for waited in (1_000, 60_000, 10**9)
    ), "capped"


@pytest.mark.parametrize(
    ("status", "kind", "label"),
    [(302, None, "3xx"), (404, None, "4xx"), (503, None, "5xx"), (None, "timeout", "timeout"),
     (None, "blocked", "blocked"), (None, None, "other"), (999, None, "other")],
)  # fmt: skip
def test_failures_get_a_bounded_status_class(
    status: int | None, kind: str | None, label: str
) -> None:
    assert status_class(status, kind) == label


def test_an_endpoint_is_disabled_only_after_failing_the_whole_period() -> None:
    period = timedelta(days=5)
    assert not should_disable(None, NOW, period)
    assert not should_disable(NOW - timedelta(days=4, hours=23), NOW, period)
    assert should_disable(NOW - timedelta(days=5), NOW, period)
