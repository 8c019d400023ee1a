"""When an event is delivered: now, or later (``deliver_at`` or ``delay``).

An event may be delivered later: ``deliver_at`` (RFC 3339 with an offset) or ``delay``
(seconds), at most ``GATEWAY_MAX_DELAY_S`` ahead; a time not in the future means now. Events
for later wait in their stream's delay store, owned by the API key's id. Times are kept in
whole ms, as the delay store keeps them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache

from riverbed.problems import Problem
from riverbed_gateway.domain.events import EventIn, Location


def delivery_times(
    items: Sequence[EventIn], now_s: float, now_ms: int, *, batch: bool, limit_s: int
) -> dict[int, datetime]:
    """Index -> delivery time of each event to keep for later; 422 for both fields or a
    time more than ``limit_s`` ahead. A time not after ``now_ms`` (in the whole ms the delay
    store keeps) is left out: that event is delivered now.
    """
    later: dict[int, datetime] = {}
    for index, item in enumerate(items):
        at: Location = ("events", index) if batch else ()
        if item.deliver_at is not None and item.delay is not None:
            raise _both_given(at)
        if item.delay is not None:
            field, ahead_s = "delay", item.delay
            moment = None
        elif item.deliver_at is not None:
            field, moment = "deliver_at", item.deliver_at
            ahead_s = moment.timestamp() - now_s
        else:
            continue
        if ahead_s > limit_s:
            raise _too_far_ahead(field, ahead_s, limit_s, at)
        if moment is None:
            moment = datetime.fromtimestamp(now_s + ahead_s, UTC)
        if whole_ms(moment) > now_ms:
            later[index] = moment
    return later


def _both_given(at: Location) -> Problem:
    return Problem(
        422,
        "invalid-delivery-time",
        "Invalid delivery time",
        "give deliver_at or delay, not both",
        errors=[
            {"loc": [*at, name], "msg": msg, "type": "exclusive"}
            for name, msg in (
                ("deliver_at", "deliver_at is given with delay: keep one"),
                ("delay", "delay is given with deliver_at: keep one"),
            )
        ],
    )


def _too_far_ahead(field: str, ahead_s: float, limit_s: int, at: Location) -> Problem:
    return Problem(
        422,
        "delivery-too-far-ahead",
        "Delivery too far ahead",
        f"{field} is {_seconds(ahead_s)} s ahead; an event may be delivered at most "
        f"{limit_s} s{_in_days(limit_s)} ahead (GATEWAY_MAX_DELAY_S)",
        max_delay_s=limit_s,
        errors=[
            {"loc": [*at, field], "msg": f"at most {limit_s} s ahead", "type": "too_far_ahead"}
        ],
    )


def rfc3339(ms: int) -> str:
    """A time in ms since the epoch as RFC 3339 in UTC with ms (``2030-01-01T08:00:00.000Z``)."""
    seconds, millis = divmod(ms, 1000)
    return f"{_utc_second(seconds)}.{millis:03d}Z"


@lru_cache(maxsize=256)
def _utc_second(seconds: int) -> str:
    # every answer formats its time: a second's text is made once, not once a request
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value < 1e12 else f"{value:.3g}"  # no 300-digit numbers


def _in_days(seconds: int) -> str:
    return f" ({seconds / 86_400:g} days)" if seconds >= 86_400 else ""


def whole_ms(moment: datetime) -> int:
    """``moment`` in ms since the epoch, as the delay store keeps it (``Publisher``)."""
    return int(moment.timestamp() * 1000)
