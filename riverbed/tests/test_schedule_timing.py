"""When schedules fire: cron in a zone across real DST changes, intervals, bounds, the misfire
rule, and what a definition accepts. Pure computations: fixed clocks, no Redis."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from riverbed.schedules import (
    CronTiming,
    IntervalTiming,
    ScheduleDefinition,
    ScheduleError,
    Timing,
    TimingError,
    first_due,
    iso,
    occurrence_event_id,
    parse_time,
    plan_fire,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
EMAIL = {"to": "ada@example.com", "subject": "Digest", "text": "Hello"}


def ms(text: str) -> int:
    return parse_time(text, what="test time")


def local_ms(zone: ZoneInfo, *fields: int, fold: int = 0) -> int:
    return round(datetime(*fields, tzinfo=zone, fold=fold).timestamp() * 1000)  # type: ignore[misc]


def occurrences(timing: Timing, after: int, until: int) -> list[int]:
    """Every occurrence in (after, until]."""
    found: list[int] = []
    cursor: int | None = after
    while (cursor := timing.next_after(cursor)) is not None and cursor <= until:  # type: ignore[arg-type]
        found.append(cursor)
    return found


def walls(instants: list[int], zone: ZoneInfo) -> list[str]:
    """Instants as the zone's wall clock with its UTC offset: what a person reads."""
    return [
        datetime.fromtimestamp(i / 1000, tz=UTC).astimezone(zone).strftime("%m-%d %H:%M%z")
        for i in instants
    ]


# -- cron across daylight-saving changes (Europe/Berlin: 2025-03-30 02:00 -> 03:00 CEST,
# 2025-10-26 03:00 CEST -> 02:00 CET; America/New_York: 2025-03-09, 2025-11-02) -----------


def test_a_fixed_time_skipped_by_spring_forward_fires_once_at_the_jump() -> None:
    timing = CronTiming("30 2 * * *", "Europe/Berlin")
    fired = occurrences(timing, ms("2025-03-28T12:00:00Z"), ms("2025-04-01T12:00:00Z"))
    assert walls(fired, BERLIN) == [
        "03-29 02:30+0100",
        "03-30 03:00+0200",  # 02:30 does not exist that day: once, as the clock jumps
        "03-31 02:30+0200",
        "04-01 02:30+0200",
    ]


def test_several_fixed_times_in_the_skipped_hour_fire_once_together() -> None:
    timing = CronTiming("15,45 2 * * *", "Europe/Berlin")
    fired = occurrences(timing, ms("2025-03-29T12:00:00Z"), ms("2025-03-31T12:00:00Z"))
    assert walls(fired, BERLIN) == ["03-30 03:00+0200", "03-31 02:15+0200", "03-31 02:45+0200"]


def test_a_fixed_time_repeated_by_fall_back_fires_on_its_first_pass_only() -> None:
    timing = CronTiming("30 2 * * *", "Europe/Berlin")
    fired = occurrences(timing, ms("2025-10-24T12:00:00Z"), ms("2025-10-27T12:00:00Z"))
    assert walls(fired, BERLIN) == ["10-25 02:30+0200", "10-26 02:30+0200", "10-27 02:30+0100"]


def test_an_hourly_cron_fires_for_each_real_hour_across_fall_back() -> None:
    timing = CronTiming("0 * * * *", "Europe/Berlin")
    day_start, day_end = local_ms(BERLIN, 2025, 10, 26), local_ms(BERLIN, 2025, 10, 27)
    fired = occurrences(timing, day_start - 1, day_end - 1)
    assert len(fired) == 25, "the fall-back day has 25 real hours"
    assert all(b - a == 3_600_000 for a, b in itertools.pairwise(fired))
    assert walls(fired, BERLIN)[1:5] == [
        "10-26 01:00+0200",
        "10-26 02:00+0200",
        "10-26 02:00+0100",  # the wall hour repeats: a new real hour, fired again
        "10-26 03:00+0100",
    ]


def test_a_wildcard_cron_skips_the_wall_times_spring_forward_removes() -> None:
    timing = CronTiming("*/15 * * * *", "Europe/Berlin")
    day_start, day_end = local_ms(BERLIN, 2025, 3, 30), local_ms(BERLIN, 2025, 3, 31)
    fired = occurrences(timing, day_start - 1, day_end - 1)
    assert len(fired) == 23 * 4, "the spring-forward day has 23 real hours"
    assert all(b - a == 900_000 for a, b in itertools.pairwise(fired))
    assert not [w for w in walls(fired, BERLIN) if " 02:" in w]


def test_the_next_occurrence_from_inside_the_first_pass_is_in_the_second_pass() -> None:
    # 02:45 CEST; the wall clock will read 02:00 again in 15 real minutes (CET)
    timing = CronTiming("*/30 * * * *", "Europe/Berlin")
    after = local_ms(BERLIN, 2025, 10, 26, 2, 45, fold=0)
    assert walls([timing.next_after(after)], BERLIN) == ["10-26 02:00+0100"]  # type: ignore[list-item]


def test_new_york_gap_and_fold_follow_the_same_rules() -> None:
    two_am = CronTiming("0 2 * * *", "America/New_York")
    fired = occurrences(two_am, ms("2025-03-08T12:00:00Z"), ms("2025-03-10T12:00:00Z"))
    assert walls(fired, NEW_YORK) == ["03-09 03:00-0400", "03-10 02:00-0400"]
    half_past_one = CronTiming("30 1 * * *", "America/New_York")
    fired = occurrences(half_past_one, ms("2025-11-01T12:00:00Z"), ms("2025-11-03T12:00:00Z"))
    assert walls(fired, NEW_YORK) == ["11-02 01:30-0400", "11-03 01:30-0500"]


def test_latest_at_or_before_sees_both_passes_of_a_repeated_hour() -> None:
    timing = CronTiming("0 * * * *", "Europe/Berlin")
    assert timing.latest_at_or_before(ms("2025-10-26T01:30:00Z")) == ms("2025-10-26T01:00:00Z")
    assert timing.latest_at_or_before(ms("2025-10-26T01:00:00Z")) == ms("2025-10-26T01:00:00Z")
    daily = CronTiming("0 8 * * MON", "Europe/Berlin")
    assert daily.latest_at_or_before(ms("2025-10-26T01:30:00Z")) == ms("2025-10-20T06:00:00Z")


def test_cron_macros_and_names() -> None:
    assert CronTiming("@daily", "UTC").next_after(ms("2025-01-01T00:00:00Z")) == ms(
        "2025-01-02T00:00:00Z"
    )
    weekdays = CronTiming("0 9 * * MON-FRI", "UTC")
    fired = occurrences(weekdays, ms("2025-01-03T10:00:00Z"), ms("2025-01-07T10:00:00Z"))
    assert [iso(f) for f in fired] == ["2025-01-06T09:00:00Z", "2025-01-07T09:00:00Z"]


# -- intervals, start, end, limit ----------------------------------------------------------


def test_an_interval_without_start_is_aligned_to_the_epoch() -> None:
    hourly = IntervalTiming(3600)
    assert hourly.next_after(ms("2025-01-01T10:20:00Z")) == ms("2025-01-01T11:00:00Z")
    assert hourly.next_after(ms("2025-01-01T11:00:00Z")) == ms("2025-01-01T12:00:00Z")
    assert hourly.latest_at_or_before(ms("2025-01-01T10:20:00Z")) == ms("2025-01-01T10:00:00Z")


def test_an_interval_with_start_and_end_counts_from_the_start() -> None:
    timing = IntervalTiming(
        600, start_ms=ms("2025-01-01T10:03:00Z"), end_ms=ms("2025-01-01T10:33:00Z")
    )
    assert [iso(o) for o in occurrences(timing, 0, ms("2030-01-01T00:00:00Z"))] == [
        "2025-01-01T10:03:00Z",
        "2025-01-01T10:13:00Z",
        "2025-01-01T10:23:00Z",
        "2025-01-01T10:33:00Z",  # the end is inclusive
    ]
    assert timing.latest_at_or_before(ms("2025-01-01T10:00:00Z")) is None
    assert timing.latest_at_or_before(ms("2025-06-01T00:00:00Z")) == ms("2025-01-01T10:33:00Z")


def test_cron_start_and_end_bound_the_occurrences() -> None:
    timing = CronTiming(
        "0 8 * * *",
        "Europe/Berlin",
        start_ms=ms("2025-06-02T06:00:00Z"),
        end_ms=ms("2025-06-04T05:59:00Z"),
    )
    fired = occurrences(timing, 0, ms("2030-01-01T00:00:00Z"))
    assert [iso(f) for f in fired] == ["2025-06-02T06:00:00Z", "2025-06-03T06:00:00Z"]


def test_a_limit_ends_the_schedule_once_reached() -> None:
    timing = IntervalTiming(60)
    assert first_due(timing, after_ms=0, fired=2, limit=3) == 60_000
    assert first_due(timing, after_ms=0, fired=3, limit=3) is None
    last = plan_fire(timing, due_ms=60_000, fired=2, limit=3, now_ms=60_000)
    assert last is not None
    assert last.next_ms is None


# -- the misfire rule ------------------------------------------------------------------------


def test_nothing_is_planned_before_the_occurrence_is_due() -> None:
    assert (
        plan_fire(IntervalTiming(60), due_ms=120_000, fired=0, limit=None, now_ms=119_999) is None
    )


def test_a_due_occurrence_fires_and_the_next_one_follows() -> None:
    plan = plan_fire(IntervalTiming(60), due_ms=120_000, fired=0, limit=None, now_ms=120_500)
    assert plan is not None
    assert (plan.occurrence_ms, plan.missed, plan.next_ms) == (120_000, 0, 180_000)


def test_after_downtime_only_the_most_recent_missed_occurrence_fires() -> None:
    daily = CronTiming("0 8 * * *", "Europe/Berlin")
    plan = plan_fire(
        daily,
        due_ms=ms("2025-10-20T06:00:00Z"),
        fired=4,
        limit=None,
        now_ms=ms("2025-10-26T09:00:00Z"),  # down from before the 20th's to after the 26th's
    )
    assert plan is not None
    assert iso(plan.occurrence_ms) == "2025-10-26T07:00:00Z"  # 08:00 CET, after fall-back
    assert plan.missed == 6  # the 20th to the 25th
    assert iso(plan.next_ms) == "2025-10-27T07:00:00Z"  # type: ignore[arg-type]


def test_downtime_past_the_end_fires_the_last_occurrence_before_the_end() -> None:
    timing = IntervalTiming(60, end_ms=600_000)
    plan = plan_fire(timing, due_ms=120_000, fired=1, limit=None, now_ms=3_600_000)
    assert plan is not None
    assert (plan.occurrence_ms, plan.missed, plan.next_ms) == (600_000, 8, None)


# -- definitions -------------------------------------------------------------------------------


def definition(**overrides: object) -> ScheduleDefinition:
    values: dict[str, object] = {"name": "digest", "type": "email.requested.v1", "data": EMAIL}
    if "every_s" not in overrides:
        values["cron"] = "0 8 * * *"
    values.update(overrides)
    built = ScheduleDefinition(**values)  # type: ignore[arg-type]
    built.check_template()
    return built


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cron": "0 8 * * * *"}, r"has 6 fields; give five fields \(minute hour"),
        ({"cron": "61 * * * *"}, r"invalid cron expression '61 \* \* \* \*'.*@hourly"),
        ({"cron": "R 8 * * *"}, r"minute field 'R' is not allowed"),
        ({"cron": "0 0 30 2 *"}, "never fires"),
        ({"tz": "Mars/Olympus"}, r"unknown time zone 'Mars/Olympus'.*Europe/Berlin"),
        ({"cron": None, "every_s": 0}, "whole number of seconds from 1"),
        ({"cron": None, "every_s": 1.5}, "whole number of seconds from 1"),
        ({"cron": "0 8 * * *", "every_s": 60}, "exactly one of a cron expression"),
        ({"cron": None}, "exactly one of a cron expression"),
        ({"cron": None, "every_s": 60, "tz": "UTC"}, "time zone applies to cron schedules only"),
        ({"start_ms": 2_000, "end_ms": 1_000}, "is before start"),
        ({"limit": 0}, "give a whole number from 1"),
        ({"name": "has space"}, r"invalid schedule name 'has space': use 1 to 100"),
        ({"name": "a:b"}, "invalid schedule name"),
        ({"type": "nope.v1"}, r"unknown event type 'nope.v1'; known types: .*email.requested.v1"),
        ({"subject": ""}, "subject must be a non-empty string"),
    ],
)
def test_a_bad_definition_is_refused_saying_what_is_accepted(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ScheduleError, match=message):
        definition(**overrides)


def test_data_that_does_not_fit_the_contract_is_refused_with_field_errors() -> None:
    with pytest.raises(ScheduleError, match=r"data does not fit email\.requested\.v1") as caught:
        definition(data={"to": "not an address", "subject": "x", "text": "y"})
    assert [e["loc"] for e in caught.value.errors] == [["data", "to"]]


def test_timing_errors_are_value_errors_naming_the_expression() -> None:
    with pytest.raises(TimingError, match="'nonsense'"):
        CronTiming("nonsense")


def test_times_need_an_offset() -> None:
    assert parse_time("2025-06-01T08:00:00+02:00", what="start") == ms("2025-06-01T06:00:00Z")
    with pytest.raises(ScheduleError, match=r"invalid start '2025-06-01T08:00'.*with an offset"):
        parse_time("2025-06-01T08:00", what="start")


def test_equal_definitions_have_one_fingerprint_and_round_trip() -> None:
    first = definition(cron="0  8 * * *", tz="Europe/Berlin")
    second = definition(cron="0 8 * * *", tz="Europe/Berlin")
    assert first.fingerprint == second.fingerprint
    assert ScheduleDefinition.from_json(first.to_json()) == first
    assert definition(tz="Europe/Paris").fingerprint != first.fingerprint


def test_an_occurrence_event_is_the_same_document_wherever_it_is_built() -> None:
    one, other = definition(), definition()
    occurrence = ms("2025-06-01T06:00:00Z")
    assert one.event(occurrence).to_json() == other.event(occurrence).to_json()
    event = json.loads(one.event(occurrence).to_json())
    assert event["id"] == occurrence_event_id("digest", occurrence)
    assert event["time"] == "2025-06-01T06:00:00Z"
    assert event["source"] == "urn:riverbed:schedule:digest"
    assert event["data"] == EMAIL
    assert occurrence_event_id("digest", occurrence + 60_000) != event["id"]
    assert occurrence_event_id("other", occurrence) != event["id"]
