"""Events that come before what they refer to: how long they wait, and when they give up.

Streams are consumed independently, so a refund or a dispute can arrive before the
payment it refers to. Such an event is put back without counting as a delivery
(``RetryLater(counts_as_delivery=False)``): how often it was tried says nothing about
whether its payment is coming, how long it has waited does. It is retried after
:func:`out_of_order_delay_ms` and dead-lettered once it has waited longer than
``out_of_order_max_wait_s`` since this group first received it.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from riverbed.errors import PermanentError, RetryLater, RiverbedError
from riverbed_contracts import CloudEvent
from riverbed_payments import metrics
from riverbed_payments.service_layer.ports import Clock

log = structlog.get_logger(__name__)

#: ms; the longest wait between two tries of an out-of-order event. A payment that shows up
#: late is then matched by its refund within five minutes, and an event waiting out the
#: whole bound (24 h by default) is tried about 300 times, which costs nothing.
OUT_OF_ORDER_MAX_RETRY_MS = 300_000


class OutOfOrder(RiverbedError):
    """The event refers to something the ledger has not recorded yet."""


def out_of_order_delay_ms(waited_ms: int, *, base_ms: int, max_ms: int) -> int:
    """Wait before the next try of an event whose payment (or dispute) is not recorded yet.

    A quarter of what it has waited so far (``waited_ms``), at least ``base_ms`` and at
    most ``max_ms`` (or ``base_ms`` when that is larger): a payment a moment late is
    picked up at the pace of ``base_ms``, one that is hours late is polled for every few
    minutes, and each try adds a quarter to the event's age, so an event that is late
    for good reaches the cap after about 25 tries instead of spinning.
    """
    return max(min(waited_ms // 4, max_ms), base_ms)


@dataclass(frozen=True)
class OutOfOrderWait:
    """The wait policy: ``retry_ms`` the first wait, ``max_wait_ms`` the bound."""

    clock: Clock
    retry_ms: int
    max_wait_ms: int

    def verdict(self, event: CloudEvent, first_seen_ms: int, error: OutOfOrder) -> RiverbedError:
        """What to raise for ``event``, which came before what it refers to: a deferral that
        does not count as a delivery while it is within the wait bound, a permanent error
        (dead-lettered) past it. ``first_seen_ms``: when the group first received it (Redis
        time, ms; 0 when the runtime did not say)."""
        if first_seen_ms <= 0:
            # the runtime did not say when the event arrived, so its wait cannot be bounded
            # by time: fall back to retries that count, bounded by the delivery limit
            log.warning("out-of-order event without first_seen_ms: retrying as a failure")
            metrics.REJECTED.labels("out_of_order").inc()
            return RetryLater(str(error), delay_ms=self.retry_ms)
        now_ms = int(self.clock().timestamp() * 1000)
        # clamped: the first-seen time comes from Redis's clock, "now" from this host's
        waited_ms = max(now_ms - first_seen_ms, 0)
        if waited_ms > self.max_wait_ms:
            metrics.REJECTED.labels("out_of_order_expired").inc()
            return PermanentError(
                f"{event.type} {event.id}: gave up after waiting "
                f"{_duration(waited_ms)} (PAYMENTS_OUT_OF_ORDER_MAX_WAIT_S is "
                f"{_duration(self.max_wait_ms)}) for what it refers to: {error}"
            )
        delay_ms = out_of_order_delay_ms(
            waited_ms, base_ms=self.retry_ms, max_ms=OUT_OF_ORDER_MAX_RETRY_MS
        )
        # +1 ms: the try after the bound finds the wait longer than the bound and
        # dead-letters the event then, not up to a whole delay later
        delay_ms = min(delay_ms, self.max_wait_ms - waited_ms + 1)
        metrics.REJECTED.labels("out_of_order").inc()
        return RetryLater(
            f"{error} (waited {_duration(waited_ms)} so far)",
            delay_ms=delay_ms,
            counts_as_delivery=False,  # "not yet", not a failure: time bounds the wait
        )


def _duration(ms: int) -> str:
    """A wait for a log line or a dead-letter message: ``850 ms``, ``42.0 s``, ``3 h 05 min``."""
    if ms < 1_000:
        return f"{ms} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    minutes = ms // 60_000
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"
