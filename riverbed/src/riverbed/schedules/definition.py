"""What a schedule is: its name, when it fires, and the event it publishes each time.

A definition is plain data, compared and stored as canonical JSON: upserting the same
definition again is recognised by its fingerprint and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Final

from pydantic import ValidationError

from riverbed.errors import RiverbedError
from riverbed.schedules.timing import (
    CronTiming,
    IntervalTiming,
    Timing,
    TimingError,
    iso,
    parse_cron,
    to_datetime,
    zone_of,
)
from riverbed_contracts import CloudEvent
from riverbed_contracts.registry import UnknownEventType, get_spec

NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
NAME_HELP: Final = "1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit"
#: namespace of occurrence event ids: uuid5(namespace, "<name>@<ISO occurrence time>")
EVENT_ID_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "urn:riverbed:schedule")


class ScheduleError(RiverbedError, ValueError):
    """A definition that cannot be stored; the message says what is accepted.

    ``errors``: the template's field errors (pydantic's, without the echoed input).
    """

    def __init__(self, message: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ScheduleError(f"invalid schedule name {name!r}: use {NAME_HELP}")
    return name


def occurrence_event_id(name: str, occurrence_ms: int) -> str:
    """The event id of one occurrence: the same in every replica, on every retry."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{name}@{iso(occurrence_ms)}"))


def parse_time(text: str, *, what: str) -> int:
    """An ISO 8601 time with an offset (``2025-06-01T08:00:00+02:00``, ``…Z``) -> ms."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ScheduleError(
            f"invalid {what} {text!r}: give an ISO 8601 time with an offset, such as "
            "2025-06-01T08:00:00+02:00 or 2025-06-01T06:00:00Z"
        )
    return round(moment.timestamp() * 1000)


@dataclass(frozen=True)
class ScheduleDefinition:
    """A named recurring event: ``cron`` (+ ``tz``, default UTC) or ``every_s``; the
    event's ``type``, ``data`` and optional ``subject`` and ``source``; optional bounds
    ``start_ms``/``end_ms`` (inclusive, ms since the epoch) and ``limit`` (occurrences)."""

    name: str
    type: str
    data: dict[str, Any]
    cron: str | None = None
    tz: str | None = None
    every_s: int | None = None
    subject: str | None = None
    source: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        if (self.cron is None) == (self.every_s is None):
            raise ScheduleError(
                "give exactly one of a cron expression (with an optional IANA time zone, "
                "default UTC) or an interval in seconds (every_s)"
            )
        try:
            if self.cron is not None:
                parse_cron(self.cron)
                object.__setattr__(self, "cron", " ".join(self.cron.split()))
                object.__setattr__(self, "tz", self.tz or "UTC")
                zone_of(self.tz or "UTC")
            elif self.tz is not None:
                raise ScheduleError(
                    "a time zone applies to cron schedules only; an interval counts real seconds"
                )
            timing = self.timing
        except TimingError as error:
            raise ScheduleError(str(error)) from None
        for bound, value in (("start", self.start_ms), ("end", self.end_ms)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ScheduleError(f"{bound} must be a time in milliseconds since the epoch")
        if self.start_ms is not None and self.end_ms is not None and self.end_ms < self.start_ms:
            raise ScheduleError(
                f"end ({iso(self.end_ms)}) is before start ({iso(self.start_ms)}): "
                "give an end at or after the start"
            )
        if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 1):
            raise ScheduleError(f"invalid limit {self.limit!r}: give a whole number from 1")
        if timing.next_after((self.start_ms or 0) - 1) is None:
            raise ScheduleError(
                f"schedule {self.name!r} never fires: no occurrence of its "
                f"{'cron expression' if self.cron else 'interval'} lies between its start and end"
            )
        for attribute in ("subject", "source"):
            value = getattr(self, attribute)
            if value is not None and (not isinstance(value, str) or not value):
                raise ScheduleError(f"{attribute} must be a non-empty string when given")

    @cached_property
    def timing(self) -> Timing:
        if self.cron is not None:
            return CronTiming(
                self.cron, self.tz or "UTC", start_ms=self.start_ms, end_ms=self.end_ms
            )
        assert self.every_s is not None
        return IntervalTiming(self.every_s, self.start_ms, self.end_ms)

    @property
    def stream(self) -> str:
        """The logical stream of the template's type (raises UnknownEventType)."""
        return get_spec(self.type).stream

    def check_template(self) -> None:
        """The event template fits its contract: a known type, ``data`` valid for it."""
        try:
            spec = get_spec(self.type)
        except UnknownEventType as error:
            raise ScheduleError(str(error)) from None
        try:
            spec.model.model_validate(self.data)
        except ValidationError as error:
            raise ScheduleError(
                f"data does not fit {self.type}: {error.error_count()} field error(s)",
                errors=[
                    {"loc": ["data", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                    for e in error.errors()
                ],
            ) from None
        self.event(self.start_ms or 0)  # the envelope's own checks (source, subject)

    def event(self, occurrence_ms: int) -> CloudEvent:
        """The event of one occurrence: its id and time depend only on the occurrence,
        so every replica builds the very same document."""
        attributes: dict[str, Any] = {}
        if self.subject is not None:
            attributes["subject"] = self.subject
        return CloudEvent(
            id=occurrence_event_id(self.name, occurrence_ms),
            type=self.type,
            source=self.source or f"urn:riverbed:schedule:{self.name}",
            time=to_datetime(occurrence_ms),
            data=self.data,
            **attributes,
        )

    # -- storage -------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal definitions, equal text."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_json(cls, text: str | bytes) -> ScheduleDefinition:
        return cls(**json.loads(text))
