"""Schedules in Redis: the index, each schedule's state, and the scripts that change them.

State of schedule ``<name>`` publishing onto ``<stream>``: the hash
``rb:{<stream>}:schedule:<name>`` (see :mod:`riverbed.keys`), fields

- ``definition`` (canonical JSON) and its ``fingerprint`` (SHA-256),
- ``next_ms``: the next occurrence to publish, ms since the epoch ('' when finished),
- ``last_ms``, ``last_entry_id``: the last occurrence published and its stream entry,
- ``fired``, ``missed``: occurrences published, and skipped by the misfire rule,
- ``paused`` ('0'/'1'), ``version`` (bumped by every write: the compare-and-set token),
- ``created_ms``, ``updated_ms``,
- during a move to another stream only: ``moving`` (on the old state: where it went) and
  ``moved_from`` (on the new state: where it came from).

The index ``rb:schedules`` maps every name to the stream of its state. The two are in
different cluster slots, so they cannot change in one script; the order of writes makes
every state reachable from the index:

- **create**: the index entry first, then the state. A process that dies in between
  leaves an index entry without a state: listed with status ``missing``, never fired;
  upserting again creates the state, removing drops the entry.
- **remove**: the state first (from then on nothing fires), then the index entry.
- **move** (the template's type changed to one on another stream): the old state is
  *retired* (``moving`` set: it never fires again) and its counts and last occurrence
  are carried into the new state (``moved_from`` set), then the index is pointed at
  the new stream, the old state deleted and ``moved_from`` cleared. Interrupted anywhere,
  the schedule does not fire twice — the old state is retired before the new one exists,
  and the new one never publishes an occurrence at or before the last one published — it
  is listed with status ``moving`` (and fires nothing) while the index still names the
  old stream, and the next upsert of the schedule finishes the move.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from riverbed import keys
from riverbed.connection import Redis
from riverbed.schedules.definition import ScheduleDefinition, check_name
from riverbed.schedules.state import ScheduleView, StoredState, text, view_of
from riverbed.schedules.timing import first_due
from riverbed.scripts import RUNTIME_SCRIPTS, LuaScript

#: upserts, pauses and resumes retry when a scheduler fired in between (compare-and-set)
_ATTEMPTS: Final = 20

# What each script does, and its KEYS and ARGV, is at the top of its file in riverbed/lua/.

#: create a state unless one exists
_CREATE: Final = LuaScript.load(RUNTIME_SCRIPTS, "schedule_create")
#: read many states of one stream (one slot) at once
_READ_ALL: Final = LuaScript.load(RUNTIME_SCRIPTS, "schedule_read_all")
#: write fields while the state is still at the version read (compare-and-set)
_SET_IF_VERSION: Final = LuaScript.load(RUNTIME_SCRIPTS, "schedule_set_if_version")
#: publish one occurrence and advance the schedule, only if nothing changed since it was read
FIRE: Final = LuaScript.load(RUNTIME_SCRIPTS, "schedule_fire")
#: retire a state that moves to another stream: it never fires again
_RETIRE: Final = LuaScript.load(RUNTIME_SCRIPTS, "schedule_retire")
#: delete a retired state once its successor is in the index
_DELETE_RETIRED: Final = LuaScript.load(RUNTIME_SCRIPTS, "schedule_delete_retired")


@dataclass(frozen=True)
class Upserted:
    outcome: Literal["created", "updated", "unchanged"]
    schedule: ScheduleView


class ScheduleStore:
    """Create, change, list, pause, resume and remove schedules.

    ``index_key``: the index (default ``rb:schedules``; tests use their own).
    ``routes``: logical stream -> the stream a schedule's events go to instead (tests),
    as for :class:`riverbed.publisher.Publisher`. ``clock``: seconds since the epoch.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        index_key: str | None = None,
        routes: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.index_key = index_key or keys.schedule_index_key()
        self.routes = dict(routes or {})
        self.clock = clock

    def _now_ms(self) -> int:
        return round(self.clock() * 1000)

    def stream_for(self, definition: ScheduleDefinition) -> str:
        stream = definition.stream
        return self.routes.get(stream, stream)

    # -- reading --------------------------------------------------------------------------

    async def index(self) -> dict[str, str]:
        """Every schedule name -> the stream its state is under."""
        raw = await self.redis.hgetall(self.index_key)
        return {str(text(k)): str(text(v)) for k, v in raw.items()}

    async def _state(self, stream: str, name: str) -> StoredState | None:
        return StoredState.decode(await self.redis.hgetall(keys.schedule_key(stream, name)))

    async def states(self, index: Mapping[str, str]) -> dict[str, StoredState | None]:
        """The states of the indexed schedules: one script call per stream (its states
        share the stream's slot), all streams at once. One call per schedule cost ~90 µs
        of client time each (1,000 schedules: ~90 ms a pass); per stream it is a few."""
        by_stream: dict[str, list[str]] = {}
        for name in sorted(index):
            by_stream.setdefault(index[name], []).append(name)
        replies = await asyncio.gather(
            *(
                _READ_ALL(self.redis, keys=[keys.schedule_key(stream, n) for n in names], args=[])
                for stream, names in by_stream.items()
            )
        )
        found: dict[str, StoredState | None] = {}
        for names, states in zip(by_stream.values(), replies, strict=True):
            for name, flat in zip(names, states, strict=True):
                found[name] = StoredState.decode(_pairs(flat))
        return found

    async def list(self) -> list[ScheduleView]:
        index = await self.index()
        states = await self.states(index)
        return [view_of(name, index[name], states[name]) for name in sorted(index)]

    async def get(self, name: str) -> ScheduleView | None:
        stream = text(await self.redis.hget(self.index_key, check_name(name)))
        if stream is None:
            return None
        return view_of(name, stream, await self._state(stream, name))

    # -- writing --------------------------------------------------------------------------

    async def upsert(self, definition: ScheduleDefinition) -> Upserted:
        """Create or change a schedule. The same definition again changes nothing (its
        next occurrence included); a changed one continues with its first occurrence
        after now and after the last one published, so nothing is published twice."""
        definition.check_template()
        name, target = definition.name, self.stream_for(definition)
        moved = False
        for _ in range(_ATTEMPTS):
            now = self._now_ms()
            current = text(await self.redis.hget(self.index_key, name))
            if current is not None and current != target:
                await self._move(name, current, target, definition, now)
                moved = True
            elif current is None:
                await self.redis.hset(self.index_key, name, target)  # before the state: see above
            state = await self._state(target, name)
            if state is None:
                if await self._create(target, definition, now):
                    return await self._answer("updated" if moved else "created", name)
                continue
            if state.moving is not None:  # an interrupted move away, now moved back
                await self._unretire(name, target, state)
                continue
            if state.moved_from is not None:
                await self._finish_move(name, state.moved_from, target)
            if state.fingerprint == definition.fingerprint:
                return await self._answer("updated" if moved else "unchanged", name)
            after = max(now, state.last_ms if state.last_ms is not None else now)
            next_ms = first_due(
                definition.timing, after_ms=after, fired=state.fired, limit=definition.limit
            )
            written = await _SET_IF_VERSION(
                self.redis,
                keys=[keys.schedule_key(target, name)],
                args=[
                    state.version,
                    "definition", definition.to_json(),
                    "fingerprint", definition.fingerprint,
                    "next_ms", "" if next_ms is None else next_ms,
                    "updated_ms", now,
                ],
            )  # fmt: skip
            if written:
                return await self._answer("updated", name)
        raise RuntimeError(f"schedule {name!r} kept changing while it was upserted; try again")

    async def _answer(
        self, outcome: Literal["created", "updated", "unchanged"], name: str
    ) -> Upserted:
        view = await self.get(name)
        assert view is not None
        return Upserted(outcome, view)

    async def _create(
        self,
        stream: str,
        definition: ScheduleDefinition,
        now: int,
        carried: StoredState | None = None,
        moved_from: str | None = None,
    ) -> bool:
        last = carried.last_ms if carried is not None else None
        fired = carried.fired if carried is not None else 0
        next_ms = first_due(
            definition.timing,
            after_ms=max(now, last if last is not None else now),
            fired=fired,
            limit=definition.limit,
        )
        fields: dict[str, str | int] = {
            "definition": definition.to_json(),
            "fingerprint": definition.fingerprint,
            "version": 1,
            "next_ms": "" if next_ms is None else next_ms,
            "fired": fired,
            "missed": carried.missed if carried is not None else 0,
            "paused": "1" if carried is not None and carried.paused else "0",
            "created_ms": (carried.created_ms or now) if carried is not None else now,
            "updated_ms": now,
        }
        if carried is not None and carried.last_ms is not None:
            fields["last_ms"] = carried.last_ms
            fields["last_entry_id"] = carried.last_entry_id or ""
        if moved_from is not None:
            fields["moved_from"] = moved_from
        args = [item for pair in fields.items() for item in pair]
        return bool(
            await _CREATE(self.redis, keys=[keys.schedule_key(stream, definition.name)], args=args)
        )

    async def _move(
        self, name: str, source: str, target: str, definition: ScheduleDefinition, now: int
    ) -> None:
        old = await self._state(source, name)
        if old is not None and old.moving not in (None, target):
            # an earlier, interrupted move towards a third stream: its half never fired
            # (it was never in the index), and now goes nowhere
            await self.redis.delete(keys.schedule_key(old.moving, name))
        retired = await _RETIRE(self.redis, keys=[keys.schedule_key(source, name)], args=[target])
        carried = StoredState.decode(_pairs(retired)) if retired else None
        await self._create(target, definition, now, carried, moved_from=source)
        await self.redis.hset(self.index_key, name, target)
        await self._finish_move(name, source, target)

    async def _finish_move(self, name: str, source: str, target: str) -> None:
        await _DELETE_RETIRED(self.redis, keys=[keys.schedule_key(source, name)], args=[target])
        await self.redis.hdel(keys.schedule_key(target, name), "moved_from")

    async def _unretire(self, name: str, stream: str, state: StoredState) -> None:
        assert state.moving is not None
        await self.redis.delete(keys.schedule_key(state.moving, name))  # never indexed
        await self.redis.hdel(keys.schedule_key(stream, name), "moving")

    async def remove(self, name: str) -> bool:
        """Delete a schedule; False when there was none. Nothing fires once it returns."""
        stream = text(await self.redis.hget(self.index_key, check_name(name)))
        if stream is None:
            return False
        state = await self._state(stream, name)
        doomed = [keys.schedule_key(stream, name)]
        if state is not None:
            doomed += [keys.schedule_key(s, name) for s in (state.moving, state.moved_from) if s]
        for key in doomed:  # one key at a time: they may be in different cluster slots
            await self.redis.delete(key)
        await self.redis.hdel(self.index_key, name)
        return True

    async def pause(self, name: str) -> ScheduleView | None:
        """Stop firing until resumed; None when there is no such schedule."""
        return await self._set_paused(name, paused=True)

    async def resume(self, name: str) -> ScheduleView | None:
        """Fire again, from the first occurrence after now: occurrences that fell while it
        was paused are skipped, not caught up. None when there is no such schedule."""
        return await self._set_paused(name, paused=False)

    async def _set_paused(self, name: str, *, paused: bool) -> ScheduleView | None:
        for _ in range(_ATTEMPTS):
            stream = text(await self.redis.hget(self.index_key, check_name(name)))
            if stream is None:
                return None
            state = await self._state(stream, name)
            if state is None:
                return None
            if state.paused == paused:
                return view_of(name, stream, state)
            fields: list[str | int] = [
                "paused",
                "1" if paused else "0",
                "updated_ms",
                self._now_ms(),
            ]
            if not paused and state.definition is not None:
                last = state.last_ms if state.last_ms is not None else self._now_ms()
                next_ms = first_due(
                    state.definition.timing,
                    after_ms=max(self._now_ms(), last),
                    fired=state.fired,
                    limit=state.definition.limit,
                )
                fields += ["next_ms", "" if next_ms is None else next_ms]
            key = keys.schedule_key(stream, name)
            if await _SET_IF_VERSION(self.redis, keys=[key], args=[state.version, *fields]):
                return await self.get(name)
        raise RuntimeError(f"schedule {name!r} kept changing; try again")


def _pairs(flat: list[Any]) -> dict[Any, Any]:
    """A flat HGETALL reply from a script ([field, value, ...]) as a mapping."""
    return dict(zip(flat[::2], flat[1::2], strict=True))
