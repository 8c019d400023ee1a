"""A schedule's state as read from Redis, and as listed (see :mod:`riverbed.schedules.store`
for the fields of the state hash)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from riverbed.schedules.definition import ScheduleDefinition
from riverbed.schedules.timing import iso

Status = Literal["active", "paused", "finished", "moving", "missing"]


def text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


@dataclass(frozen=True)
class StoredState:
    """One schedule's state hash, decoded."""

    definition: ScheduleDefinition | None  # None: undecodable (written by a newer version)
    version: str
    next_ms: int | None
    last_ms: int | None
    last_entry_id: str | None
    fired: int
    missed: int
    paused: bool
    created_ms: int | None
    updated_ms: int | None
    moving: str | None
    moved_from: str | None
    fingerprint: str | None

    @classmethod
    def decode(cls, raw: Mapping[Any, Any]) -> StoredState | None:
        # inline, not text(): a scheduler pass decodes every field of every schedule
        fields = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }
        if not fields:
            return None
        return cls(
            definition=_definition(fields.get("definition") or ""),
            version=fields.get("version") or "0",
            next_ms=_int(fields.get("next_ms")),
            last_ms=_int(fields.get("last_ms")),
            last_entry_id=fields.get("last_entry_id"),
            fired=_int(fields.get("fired")) or 0,
            missed=_int(fields.get("missed")) or 0,
            paused=fields.get("paused") == "1",
            created_ms=_int(fields.get("created_ms")),
            updated_ms=_int(fields.get("updated_ms")),
            moving=fields.get("moving"),
            moved_from=fields.get("moved_from"),
            fingerprint=fields.get("fingerprint"),
        )

    @property
    def status(self) -> Status:
        if self.moving is not None:
            return "moving"
        if self.paused:
            return "paused"
        return "finished" if self.next_ms is None else "active"


@dataclass(frozen=True)
class ScheduleView:
    """A schedule as listed: its stream, status, definition and progress."""

    name: str
    stream: str
    status: Status
    state: StoredState | None

    def as_json(self) -> dict[str, Any]:
        state = self.state
        definition = state.definition if state is not None else None
        document: dict[str, Any] = {"name": self.name, "stream": self.stream, "status": self.status}
        if definition is not None:
            document.update(
                type=definition.type,
                cron=definition.cron,
                tz=definition.tz,
                every_s=definition.every_s,
                data=definition.data,
                subject=definition.subject,
                source=definition.source,
                start=iso(definition.start_ms) if definition.start_ms is not None else None,
                end=iso(definition.end_ms) if definition.end_ms is not None else None,
                limit=definition.limit,
            )
        if state is not None:
            document.update(
                paused=state.paused,
                # only an active schedule waits for an occurrence (resume recomputes it)
                next_fire=iso(state.next_ms)
                if state.next_ms is not None and self.status == "active"
                else None,
                last_fire=iso(state.last_ms) if state.last_ms is not None else None,
                last_entry_id=state.last_entry_id,
                fired=state.fired,
                misfires_skipped=state.missed,
                created=iso(state.created_ms) if state.created_ms is not None else None,
                updated=iso(state.updated_ms) if state.updated_ms is not None else None,
            )
            if state.moving is not None:
                document["moving_to"] = state.moving
        return document


@lru_cache(maxsize=4096)
def _definition(document: str) -> ScheduleDefinition | None:
    """A stored definition, parsed and checked once per process (a pass reads them all);
    None when it cannot be read (written by a newer version, or damaged)."""
    try:
        return ScheduleDefinition.from_json(document)
    except (ValueError, TypeError):
        return None


def view_of(name: str, stream: str, state: StoredState | None) -> ScheduleView:
    return ScheduleView(name, stream, "missing" if state is None else state.status, state)
