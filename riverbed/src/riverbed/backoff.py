"""Retry delays: exponential backoff with jitter, or an explicit schedule."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delay before retry number ``attempt`` (1 = the retry after the first delivery failed).

    With ``schedule`` set (ms per retry, last value repeated) it is used as given,
    as SMTP and Standard Webhooks prescribe; otherwise ``base_ms * 2**(attempt-1)``
    capped at ``max_ms``. Jitter spreads retries ±``jitter`` of the delay so that
    a burst of failures does not retry in lockstep.
    """

    base_ms: int = 1_000
    max_ms: int = 300_000
    jitter: float = 0.2
    schedule: Sequence[int] = ()

    def delay_ms(self, attempt: int, rng: random.Random | None = None) -> int:
        attempt = max(attempt, 1)
        if self.schedule:
            nominal = self.schedule[min(attempt, len(self.schedule)) - 1]
        else:
            nominal = min(self.base_ms * 2 ** min(attempt - 1, 62), self.max_ms)
        spread = nominal * self.jitter
        value = nominal + (rng or random).uniform(-spread, spread)
        return max(int(value), 0)
