"""When a schedule fires: cron in an IANA time zone, or a fixed interval; no I/O.

Every time here is an integer number of milliseconds since the Unix epoch (UTC).

**Cron** expressions have the five standard fields (minute, hour, day of month, month,
day of week; names such as ``MON`` or ``JAN``, ``L``, ``W`` and ``#`` as croniter reads
them) or one of ``@hourly @daily @midnight @weekly @monthly @yearly @annually``. They are
matched against the wall clock of their zone by croniter; which real instant a wall time
is — around daylight-saving changes — is decided here, the way Vixie cron does it:

- *Fixed-time* expressions (no ``*`` in the minute or the hour field, e.g. ``30 2 * * *``)
  fire once per matching wall time. A wall time the spring-forward jump skips fires once,
  at the jump (Europe/Berlin, 2025-03-30: ``30 2 * * *`` fires at 03:00 CEST); a wall time
  the autumn fall-back repeats fires on its first pass only (2025-10-26: at 02:30 CEST,
  not again at 02:30 CET).
- *Wildcard* expressions (a ``*`` in the minute or the hour field, e.g. ``0 * * * *``,
  ``*/15 * * * *``) follow real time: a skipped wall time does not exist and does not
  fire; a repeated wall time is two real instants and fires on both (``0 * * * *`` fires
  25 times on 2025-10-26 in Europe/Berlin, once per real hour).

**Intervals** are whole seconds. Without a start they are aligned to the epoch
(``every 3600`` fires on the hour, UTC), so every replica and every upsert agree on the
occurrences without storing an anchor; with a start they fire at ``start + k * every``.

``start`` (inclusive) and ``end`` (inclusive) bound the occurrences; ``limit`` (the number
of occurrences published) is applied by :func:`plan_fire` and :func:`first_due`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from riverbed.errors import RiverbedError

#: a daylight-saving change never moves the clock by more than this (the largest in the
#: tz database is 2 h): how far around an instant a repeated or skipped wall hour can be
_LARGEST_DST_SHIFT: Final = timedelta(hours=3)
#: bound on the wall times examined for one answer: far more than any real expression
#: needs (every minute for two months), so a pathological one ends instead of spinning
_MAX_STEPS: Final = 100_000
#: intervals: at least a second (the scheduler polls about once a second), at most ten years
MIN_EVERY_S: Final = 1
MAX_EVERY_S: Final = 10 * 366 * 86_400
#: how many missed occurrences a catch-up counts before it stops counting (the metric)
MISSED_COUNT_CAP: Final = 10_000

CRON_HELP: Final = (
    "give five fields (minute hour day-of-month month day-of-week), such as '0 8 * * *' "
    "or '*/15 9-17 * * MON-FRI', or one of @hourly @daily @midnight @weekly @monthly "
    "@yearly @annually"
)
ZONE_HELP: Final = "give an IANA time zone name such as Europe/Berlin, America/New_York or UTC"
EVERY_HELP: Final = f"give a whole number of seconds from {MIN_EVERY_S} to {MAX_EVERY_S}"

_MACROS: Final = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"
_DAYS = "SUN|MON|TUE|WED|THU|FRI|SAT"
# What each field may hold. croniter also knows 'R' (random) and 'H' (hashed) values:
# refused, because every replica must compute the very same occurrences.
_FIELDS: Final = (
    ("minute", re.compile(r"^[0-9*,/-]+$")),
    ("hour", re.compile(r"^[0-9*,/-]+$")),
    ("day of month", re.compile(r"^[0-9*,/?LW-]+$")),
    ("month", re.compile(rf"^(?:[0-9*,/-]|{_MONTHS})+$", re.IGNORECASE)),
    ("day of week", re.compile(rf"^(?:[0-9*,/?L#-]|{_DAYS})+$", re.IGNORECASE)),
)


class TimingError(RiverbedError, ValueError):
    """A cron expression, zone, interval or bound that cannot be used; says what can."""


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def iso(ms: int) -> str:
    """``2025-03-30T01:00:00Z``; milliseconds only when there are some."""
    moment = to_datetime(ms)
    text = moment.isoformat(timespec="milliseconds" if ms % 1000 else "seconds")
    return text.replace("+00:00", "Z")


class Timing(Protocol):
    """The occurrences of one schedule, bounded by its start and end."""

    def next_after(self, after_ms: int) -> int | None:
        """The first occurrence strictly after ``after_ms``; None when there is none."""
        ...

    def latest_at_or_before(self, at_ms: int) -> int | None:
        """The last occurrence at or before ``at_ms``; None when there is none."""
        ...


@dataclass(frozen=True)
class IntervalTiming:
    every_s: int
    start_ms: int | None = None
    end_ms: int | None = None

    def __post_init__(self) -> None:
        every = self.every_s
        if isinstance(every, bool) or not isinstance(every, int):
            raise TimingError(f"invalid interval {every!r}: {EVERY_HELP}")
        if not MIN_EVERY_S <= every <= MAX_EVERY_S:
            raise TimingError(f"invalid interval {self.every_s!r}: {EVERY_HELP}")

    @property
    def _anchor(self) -> int:
        return self.start_ms if self.start_ms is not None else 0

    def next_after(self, after_ms: int) -> int | None:
        step = self.every_s * 1000
        if after_ms < self._anchor:
            found = self._anchor
        else:
            found = self._anchor + ((after_ms - self._anchor) // step + 1) * step
        return found if self.end_ms is None or found <= self.end_ms else None

    def latest_at_or_before(self, at_ms: int) -> int | None:
        if self.end_ms is not None:
            at_ms = min(at_ms, self.end_ms)
        if at_ms < self._anchor:
            return None
        step = self.every_s * 1000
        return self._anchor + (at_ms - self._anchor) // step * step


def parse_cron(expression: str) -> str:
    """The five fields of ``expression`` (macros expanded), checked; TimingError if not."""
    text = " ".join(expression.split())
    text = _MACROS.get(text.lower(), text)
    fields = text.split(" ")
    if len(fields) != 5:
        raise TimingError(
            f"invalid cron expression {expression!r}: it has {len(fields)} fields; {CRON_HELP}"
        )
    for (what, allowed), value in zip(_FIELDS, fields, strict=True):
        if not allowed.match(value):
            raise TimingError(
                f"invalid cron expression {expression!r}: {what} field {value!r} is not "
                f"allowed; {CRON_HELP}"
            )
    if not croniter.is_valid(text):
        raise TimingError(f"invalid cron expression {expression!r}; {CRON_HELP}")
    return text


def zone_of(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):  # ValueError: a path-like or empty key
        raise TimingError(f"unknown time zone {name!r}: {ZONE_HELP}") from None


class CronTiming:
    """Occurrences of a cron expression in a time zone (see the module docstring for DST)."""

    def __init__(
        self, expression: str, zone: str = "UTC", *, start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> None:  # fmt: skip
        self.expression = parse_cron(expression)
        self.zone = zone_of(zone)
        self.start_ms = start_ms
        self.end_ms = end_ms
        minute, hour = self.expression.split(" ")[:2]
        # Vixie cron's distinction: '*' in the minute or hour field follows real time
        self.follows_real_time = "*" in minute or "*" in hour
        self._matcher = croniter(self.expression, datetime(2000, 1, 1))

    def next_after(self, after_ms: int) -> int | None:
        if self.start_ms is not None:
            after_ms = max(after_ms, self.start_ms - 1)
        found = self._next_after(after_ms)
        if found is None or (self.end_ms is not None and found > self.end_ms):
            return None
        return found

    def latest_at_or_before(self, at_ms: int) -> int | None:
        if self.end_ms is not None:
            at_ms = min(at_ms, self.end_ms)
        floor = self.start_ms if self.start_ms is not None else None
        # look back over a growing window until it holds an occurrence, then walk forward
        # to the last one: a few steps for any expression, whatever the gap between runs
        window_ms = 60_000
        while True:
            since = at_ms - window_ms
            if floor is not None:
                since = max(since, floor - 1)
            found = self._next_after(since)
            if found is not None and found <= at_ms:
                while (following := self._next_after(found)) is not None and following <= at_ms:
                    found = following
                return found
            if floor is not None and since <= floor - 1:
                return None
            if window_ms > 100 * 366 * 86_400_000:  # no occurrence in a century: none at all
                return None
            window_ms *= 4

    # -- wall clock to real time ---------------------------------------------------------

    def _next_after(self, after_ms: int) -> int | None:
        after = to_datetime(after_ms)
        local = after.astimezone(self.zone)
        offset = local.utcoffset() or timedelta(0)
        later_offset = (after + _LARGEST_DST_SHIFT).astimezone(self.zone).utcoffset() or offset
        # A fall-back ahead repeats wall times just behind ours, and their second pass is
        # still to come: start matching that far back.
        back = max(offset - later_offset, timedelta(0))
        wall = local.replace(tzinfo=None) - back
        try:
            self._matcher.set_current(wall, force=True)
            best: int | None = None
            for _ in range(_MAX_STEPS):
                candidate: datetime = self._matcher.get_next(datetime)
                instants, lowest = self._instants(candidate)
                for instant in instants:
                    if instant > after_ms and (best is None or instant < best):
                        best = instant
                # no later wall time can map to an instant before `lowest`
                if best is not None and lowest >= best:
                    return best
        except CroniterError:  # no match left (e.g. '0 0 30 2 *'): never fires again
            return None
        return best

    def _instants(self, wall: datetime) -> tuple[list[int], int]:
        """The instants wall time ``wall`` fires at, and a lower bound that never decreases
        as the wall time grows (to stop looking)."""
        first = _ms(wall.replace(tzinfo=self.zone, fold=0))
        second = _ms(wall.replace(tzinfo=self.zone, fold=1))
        if first == second:  # an ordinary wall time: one instant
            return [first], first
        if first < second:  # repeated by a fall-back: first pass, then second
            return ([first, second] if self.follows_real_time else [first]), first
        # skipped by a spring-forward jump (zoneinfo: fold=0 reads it with the old offset,
        # landing after the jump; fold=1 with the new one, landing before it)
        jump = self._jump_between(second, first)
        return ([] if self.follows_real_time else [jump]), jump

    def _jump_between(self, before_ms: int, after_ms: int) -> int:
        """The instant the UTC offset changes, between two instants around it (to 1 ms)."""
        old = to_datetime(before_ms).astimezone(self.zone).utcoffset()
        while after_ms - before_ms > 1:
            middle = (before_ms + after_ms) // 2
            if to_datetime(middle).astimezone(self.zone).utcoffset() == old:
                before_ms = middle
            else:
                after_ms = middle
        return after_ms


@dataclass(frozen=True)
class FirePlan:
    """What one scheduler pass does for a due schedule.

    ``occurrence_ms`` is published; ``missed`` earlier due occurrences are skipped (the
    misfire rule; counted up to :data:`MISSED_COUNT_CAP`); ``next_ms`` is the following
    occurrence, None when the schedule is finished (past its end or its limit).
    """

    occurrence_ms: int
    missed: int
    next_ms: int | None


def plan_fire(
    timing: Timing, *, due_ms: int, fired: int, limit: int | None, now_ms: int
) -> FirePlan | None:
    """The misfire rule. ``due_ms`` is the stored next occurrence; None when it is not due.

    When several occurrences are due (the scheduler was down, or the schedule lagged),
    only the most recent one is published, once; the older ones are skipped, and the
    schedule continues with the first occurrence after ``now_ms``.
    """
    if due_ms > now_ms:
        return None
    occurrence = timing.latest_at_or_before(now_ms)
    if occurrence is None or occurrence < due_ms:
        occurrence = due_ms  # the stored occurrence is an occurrence by construction
    missed = 0
    cursor: int | None = due_ms
    while cursor is not None and cursor < occurrence and missed < MISSED_COUNT_CAP:
        missed += 1
        cursor = timing.next_after(cursor)
    finished = limit is not None and fired + 1 >= limit
    return FirePlan(occurrence, missed, None if finished else timing.next_after(now_ms))


def first_due(timing: Timing, *, after_ms: int, fired: int, limit: int | None) -> int | None:
    """The next occurrence to wait for after ``after_ms``; None when none is left."""
    if limit is not None and fired >= limit:
        return None
    return timing.next_after(after_ms)
