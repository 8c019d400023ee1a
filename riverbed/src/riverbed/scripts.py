"""Redis Lua scripts: the one way the runtime (and services) load and run them.

Every script lives in a ``.lua`` file of a package (the runtime's are in
:mod:`riverbed.lua`), its KEYS/ARGV header comment with it, and is loaded with
:meth:`LuaScript.load`. A service keeps its own scripts the same way, in a package of its
own: ``LuaScript.load("riverbed_gateway.lua", "idempotency_claim")``.

The constants below are the scripts of the reliable consumer and of the delay store. Each
touches only keys of one logical stream (one hash tag), so it is safe on Redis Cluster,
and runs atomically: two consumers can never claim the same entry, and a dead-letter copy
is never written without its acknowledgement.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

#: the package holding the runtime's own ``.lua`` files
RUNTIME_SCRIPTS: Final = "riverbed.lua"


class LuaScript:
    """A script bound to no client: ``await script(redis, keys=[…], args=[…])``.

    For components that get their client after construction (at service start-up).
    EVALSHA first; on NOSCRIPT (a restarted or flushed Redis) it loads and retries.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1

    @classmethod
    def load(cls, package: str, name: str) -> LuaScript:
        """The script in ``<name>.lua`` of ``package`` (an importable package's data files,
        so it works from a wheel or a zip as well as from a checkout)."""
        return cls(resources.files(package).joinpath(f"{name}.lua").read_text(encoding="utf-8"))

    async def __call__(
        self, redis: Redis, *, keys: Sequence[str], args: Sequence[str | bytes | int | float]
    ) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await redis.script_load(self.source)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)


def _runtime(name: str) -> LuaScript:
    return LuaScript.load(RUNTIME_SCRIPTS, name)


# The reliable consumer's scripts: what each does, and its KEYS and ARGV, is at the top of
# its file in riverbed/lua/.

#: claim entries: a crashed sibling's, this consumer's own after a restart, or a dead one's
CLAIM: Final = _runtime("consumer_claim")
#: set this consumer's heartbeat to Redis's time
HEARTBEAT: Final = _runtime("consumer_heartbeat")
#: reset the idle time of entries still held; returns those no longer held
KEEPALIVE: Final = _runtime("consumer_keepalive")
#: acknowledge handled entries (remembering their event ids), check event ids against
#: what the group handled: either, or both in one call
ACK_CHECK: Final = _runtime("consumer_ack_check")
#: copy an entry to the dead-letter stream and acknowledge it
DEAD_LETTER: Final = _runtime("consumer_dead_letter")

# The delay store's scripts (riverbed.delay).

#: park failed or deferred deliveries in the delay store, acknowledging them
PARK: Final = _runtime("delay_park")
#: append what is due onto the stream and remove it from the store
PROMOTE: Final = _runtime("delay_promote")
#: put events in the delay store for later, once per member
SCHEDULE: Final = _runtime("delay_schedule")
#: cancel a delayed event not yet promoted
CANCEL: Final = _runtime("delay_cancel")
#: carry retries of the schedule before the delay store over into it
CARRY_OVER_LEGACY: Final = _runtime("delay_carry_over_legacy")

#: move one dead-lettered entry back onto its stream (the operator CLI's replay)
REPLAY_DEAD_LETTER: Final = _runtime("dead_letter_replay")
