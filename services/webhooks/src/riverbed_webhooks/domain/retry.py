"""When to try a delivery again, and what an endpoint's answer means.

The Standard Webhooks schedule: the first attempt at once, then retries after
5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h (ten attempts in all),
each spread by jitter so that a burst of failures does not retry in lockstep.
``Retry-After`` on 429 and 503 replaces the scheduled delay (within a cap);
``410 Gone`` means "stop": the endpoint is disabled at once.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Final

#: ms to wait before attempts 2, 3, ... (attempt 1 goes at once)
STANDARD_SCHEDULE_MS: Final = (
    5_000,
    300_000,
    1_800_000,
    7_200_000,
    18_000_000,
    36_000_000,
    50_400_000,
    72_000_000,
    86_400_000,
)


@dataclass(frozen=True)
class RetrySchedule:
    """``delays_ms[i]`` is the wait after attempt ``i + 1`` failed; ±``jitter`` of it."""

    delays_ms: Sequence[int] = STANDARD_SCHEDULE_MS
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if any(delay < 0 for delay in self.delays_ms):
            raise ValueError("retry delays are >= 0 ms")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter is a fraction between 0 and 1")

    @property
    def max_attempts(self) -> int:
        """Attempts in all: the first one plus one per delay."""
        return len(self.delays_ms) + 1

    def delay_after(self, attempt: int, rng: random.Random | None = None) -> int | None:
        """ms to wait after attempt number ``attempt`` failed; None when it was the last."""
        if attempt < 1:
            raise ValueError("attempts are numbered from 1")
        if attempt >= self.max_attempts:
            return None
        nominal = self.delays_ms[attempt - 1]
        spread = nominal * self.jitter
        return max(int(nominal + (rng or random).uniform(-spread, spread)), 0)


def parse_retry_after(value: str | None, now: datetime) -> int | None:
    """``Retry-After`` (delay in seconds, or an HTTP date) in ms from ``now``; None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return int(text) * 1000
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        return None
    return max(int((when - now).total_seconds() * 1000), 0)


class Verdict(enum.Enum):
    """What one attempt's outcome means for the delivery."""

    DELIVERED = "delivered"  # 2xx
    RETRY = "retry"  # anything else: try again per the schedule
    GONE = "gone"  # 410: the receiver asks us to stop; the endpoint is disabled


def verdict_for(status_code: int | None) -> Verdict:
    """Only 2xx is success; redirects are not followed and count as failures."""
    if status_code is not None and 200 <= status_code <= 299:
        return Verdict.DELIVERED
    if status_code == 410:
        return Verdict.GONE
    return Verdict.RETRY


#: statuses whose Retry-After is honoured
RETRY_AFTER_STATUSES: Final = frozenset({429, 503})


def next_delay_ms(
    schedule: RetrySchedule,
    attempt: int,
    *,
    status_code: int | None,
    retry_after_ms: int | None,
    retry_after_cap_ms: int,
    rng: random.Random | None = None,
) -> int | None:
    """The wait before the next attempt, or None when ``attempt`` was the last one.

    On 429/503 with a usable ``Retry-After`` the receiver's wish replaces the
    schedule, capped at ``retry_after_cap_ms`` so that a hostile or broken header
    cannot park a delivery for a year; the number of attempts stays bounded.
    """
    scheduled = schedule.delay_after(attempt, rng)
    if scheduled is None:
        return None
    if status_code in RETRY_AFTER_STATUSES and retry_after_ms is not None:
        return min(retry_after_ms, retry_after_cap_ms)
    return scheduled


def status_class(status_code: int | None, error_kind: str | None) -> str:
    """A bounded label for a failed attempt: ``3xx``/``4xx``/``5xx``, or the error kind."""
    if status_code is not None:
        return f"{status_code // 100}xx" if 100 <= status_code <= 599 else "other"
    return error_kind or "other"


def deferral_delay_ms(
    waited_ms: int, *, base_ms: int, max_ms: int, rng: random.Random | None = None
) -> int:
    """Wait before a task put back by a limit (no attempt made) is tried again.

    As long again as the task has waited so far (``waited_ms`` since it was created), at
    least ``base_ms`` and at most ``max_ms``: each deferral about doubles the task's age,
    so a long queue for one busy endpoint thins out instead of spinning, without a
    deferral counter (deferrals do not count as deliveries). Spread ±50 % so that the
    queued tasks do not come back together.
    """
    nominal = min(max(waited_ms, base_ms), max_ms)
    return max(int(nominal * (rng or random).uniform(0.5, 1.5)), 1)
