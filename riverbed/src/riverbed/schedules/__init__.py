"""Recurring schedules: named events published on a cron or interval, exactly once.

A schedule has a name, a time rule — a cron expression in an IANA time zone, or an
interval in seconds — an event template (CloudEvents type, data, optional subject and
source; checked against the contracts registry when stored), optional start and end
times, an optional limit on the number of occurrences published, and a paused flag.
:class:`ScheduleStore` creates, changes, lists, pauses, resumes and removes them;
:class:`Scheduler` is the background loop that publishes what is due (any service may
run it: ``Service(..., run_scheduler=True)``; the gateway does).

**Exactly once, with any number of schedulers.** A schedule's state lives under the hash
tag of the stream its events go to (``rb:{<stream>}:schedule:<name>``), so one Lua script
can compare the state with what the scheduler read (a version number bumped by every
write), append the occurrence's event to the stream and advance the state, atomically.
Two schedulers racing for an occurrence: one script runs first and the other finds the
version changed. A scheduler dying mid-pass: the script ran whole or not at all. The
event id is derived from the schedule name and the occurrence time (a UUIDv5 of
``<name>@<ISO occurrence time>``), and a schedule never publishes an occurrence at or
before the last one it published (also across changes and moves), so even a consumer
can tell a schedule's occurrences apart by id.

**Idempotent upserts.** Upserting the definition already stored changes nothing: not its
next occurrence, and it publishes nothing. A changed definition continues with its first
occurrence after now (and after the last one published).

**Misfires.** When a scheduler finds several occurrences of a schedule due at once —
every scheduler was down, or Redis was — it publishes only the most recent one, once,
counts the others in ``riverbed_schedule_misfires_skipped_total``, and continues with the
first occurrence after now. Occurrences that fall while a schedule is paused are skipped
and not caught up on resume.

**Daylight saving** (cron in a zone with DST): see :mod:`riverbed.schedules.timing`.
Fixed-time expressions (``30 2 * * *``) fire once per day — at the jump when spring skips
their wall time, on the first pass when autumn repeats it; wildcard ones (``0 * * * *``)
fire once per real hour.
"""

from riverbed.schedules.definition import (
    NAME_HELP,
    ScheduleDefinition,
    ScheduleError,
    check_name,
    occurrence_event_id,
    parse_time,
)
from riverbed.schedules.scheduler import Fired, Scheduler, SchedulerSettings
from riverbed.schedules.state import ScheduleView, StoredState
from riverbed.schedules.store import ScheduleStore, Upserted
from riverbed.schedules.timing import (
    CronTiming,
    FirePlan,
    IntervalTiming,
    Timing,
    TimingError,
    first_due,
    iso,
    plan_fire,
)

__all__ = [
    "NAME_HELP",
    "CronTiming",
    "FirePlan",
    "Fired",
    "IntervalTiming",
    "ScheduleDefinition",
    "ScheduleError",
    "ScheduleStore",
    "ScheduleView",
    "Scheduler",
    "SchedulerSettings",
    "StoredState",
    "Timing",
    "TimingError",
    "Upserted",
    "check_name",
    "first_due",
    "iso",
    "occurrence_event_id",
    "parse_time",
    "plan_fire",
]
