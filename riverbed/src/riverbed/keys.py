"""The runtime's Redis keys, and the helpers every service builds its own keys with.

All keys of one logical stream share the hash tag ``{<stream>}`` so that the
stream, its dead-letter stream, its retry schedule and its idempotency keys
live in one Redis Cluster slot and can be used together in one Lua script or
MULTI. Cache keys carry their namespace as their hash tag instead.

Layout (``<s>`` is a logical stream name such as ``email.requested``):

- ``rb:{<s>}:stream``                 the stream itself (no TTL, ever)
- ``rb:{<s>}:dlq``                    its dead-letter stream (no TTL)
- ``rb:{<s>}:delay``                  sorted set: delay-store member -> due time (ms since epoch)
- ``rb:{<s>}:delay:items``            hash: delay-store member -> the event's JSON, as appended
- ``rb:{<s>}:delay:meta``             hash: delay-store member -> routing header and details
- ``rb:{<s>}:delay:promoted``         sorted set: delayed-event member -> when promoted (ms);
                                       trimmed to a window, so a late cancel can answer "too late"
- ``rb:{<s>}:retry:<group>``          legacy (before the delay store): entry id -> due time (ms);
                                       read only to carry its entries over
- ``rb:{<s>}:consumers:<group>``     hash: consumer name -> last heartbeat (ms since epoch)
- ``rb:{<s>}:done:<group>``           sorted set: handled event id -> when (ms); trimmed to a window
- ``rb:{<s>}:schedule:<name>``        hash: a recurring schedule publishing onto ``<s>`` (no TTL)
- ``rb:schedules``                    hash: schedule name -> logical stream (the index; no TTL)
- ``rb:cache:{<ns>}:v``               namespace version counter (no TTL; one per namespace)
- ``rb:cache:{<ns>}:<version>:<key>`` cache entry (always a TTL)
- ``rb:cache:{<ns>}:lease:<version>:<key>`` fill lease of a cache entry (always a TTL)

A service's own keys (its API keys, send markers, leases…) are named in that service's
``keys`` module, under ``rb:<service>:`` (:func:`owner_prefix`), built with
:func:`owned_key` and :func:`hash_tag`; the runtime names none of them. Owners never share a
prefix, so a SCAN or an ACL pattern of one owner never reaches another's keys
(``tests/test_key_ownership.py`` checks every owner's prefixes).
"""

from __future__ import annotations

import re

PREFIX = "rb"

#: where every key the runtime itself writes starts: a stream family (its hash tag comes
#: first), the cache, the schedule index
RUNTIME_KEY_PREFIXES = (f"{PREFIX}:{{", f"{PREFIX}:cache:", f"{PREFIX}:schedules")

_OWNER_NAME = re.compile(r"[a-z][a-z0-9-]*")


def owner_prefix(owner: str) -> str:
    """``rb:<owner>:``, where every key of one owner (a service) starts.

    Refuses a name the runtime's keys would overlap (``cache``, ``schedules``…) or one
    that would put a separator or hash tag in the prefix.
    """
    prefix = f"{PREFIX}:{owner}:"
    if not _OWNER_NAME.fullmatch(owner) or any(
        prefix.startswith(own) or own.startswith(prefix) for own in RUNTIME_KEY_PREFIXES
    ):
        raise ValueError(
            f"invalid key owner {owner!r}: use a lowercase service name such as 'email' "
            "that no runtime key starts with"
        )
    return prefix


def owned_key(prefix: str, *parts: str) -> str:
    """An owner's key: its prefix (:func:`owner_prefix`) then ``parts`` joined by ``:``."""
    return prefix + ":".join(parts)


def hash_tag(value: str) -> str:
    """``{value}``: the part of a key Redis Cluster hashes. Keys with the same tag share a
    slot, so one script or MULTI may use them together (a key has one tag, its first)."""
    return f"{{{value}}}"


def _tag(stream: str) -> str:
    if not stream or any(c in stream for c in "{}: \t\n"):
        raise ValueError(
            f"invalid logical stream name {stream!r}: use dotted lowercase names "
            "such as 'email.requested' (no braces, colons or whitespace)"
        )
    return f"{PREFIX}:{{{stream}}}"


def stream_key(stream: str) -> str:
    return f"{_tag(stream)}:stream"


def dead_letter_key(stream: str) -> str:
    return f"{_tag(stream)}:dlq"


def legacy_retry_schedule_key(stream: str, group: str) -> str:
    """Where retries waited before the delay store: pending entry ids scored by due time (ms).

    Consumers of this version carry its members over into the delay store and never add any.
    """
    return f"{_tag(stream)}:retry:{group}"


def delay_key(stream: str) -> str:
    """Sorted set of what waits to be appended to ``stream``: member -> due time (ms since epoch).

    Members are ``event:<event id>`` for an event published for later (every group gets it)
    and ``retry:<group>:<entry id>`` for a retry or deferral of one group's delivery.
    """
    return f"{_tag(stream)}:delay"


def delay_items_key(stream: str) -> str:
    """Hash: delay-store member -> the event's CloudEvents JSON, as it will be appended."""
    return f"{_tag(stream)}:delay:items"


def delay_meta_key(stream: str) -> str:
    """Hash: delay-store member -> ``<group>\\t<attempt>\\t<first_seen>\\t<owner>\\t<JSON>``:
    what a promoted retry carries (empty for an event published for later), the owner of a
    delayed event, then its due time, or a retry's reason and last error."""
    return f"{_tag(stream)}:delay:meta"


def delay_promoted_key(stream: str) -> str:
    """Sorted set: delayed-event member -> when it was promoted (ms); trimmed to a window."""
    return f"{_tag(stream)}:delay:promoted"


def heartbeats_key(stream: str, group: str) -> str:
    """Hash: consumer name -> its last heartbeat (ms since epoch, Redis time).

    A consumer beats every second while it runs and removes its field when it stops; a
    sibling takes over the pending entries of a consumer whose beat is older than the
    heartbeat timeout. A consumer that never beat here (a version before heartbeats) is
    left to the visibility timeout.
    """
    return f"{_tag(stream)}:consumers:{group}"


def idempotency_key(stream: str, group: str) -> str:
    """Sorted set of the event ids ``group`` handled, scored by when (ms since epoch)."""
    return f"{_tag(stream)}:done:{group}"


def logical_stream_of(key: str) -> str:
    """The logical stream name inside a stream-family key (``rb:{x}:stream`` -> ``x``)."""
    start, end = key.find("{"), key.find("}")
    if not key.startswith(f"{PREFIX}:{{") or end < start:
        raise ValueError(f"{key!r} is not a Riverbed stream key")
    return key[start + 1 : end]


def cache_version_key(namespace: str) -> str:
    return f"{PREFIX}:cache:{{{namespace}}}:v"


def cache_entry_key(namespace: str, version: int, key: str) -> str:
    return f"{PREFIX}:cache:{{{namespace}}}:{version}:{key}"


def stream_key_pattern() -> str:
    """SCAN pattern matching every Riverbed stream (not dead-letter) key."""
    return f"{PREFIX}:{{*}}:stream"


def cache_lease_key(namespace: str, version: int, key: str) -> str:
    """Fill lease of a cache entry: ``rb:cache:{<ns>}:lease:<version>:<key>`` (always a TTL).

    Set by a lookup that missed, checked and removed when the loaded value is
    written; a delete or set in between removes it, so a load that raced a
    change never writes its stale value. ``lease`` cannot be a version (those
    are integers), so it never collides with an entry key.
    """
    return f"{PREFIX}:cache:{{{namespace}}}:lease:{version}:{key}"


# -- schedules --------------------------------------------------------------------
# A schedule's state lives under the hash tag of the stream its events go to, so one
# script can check it, append the occurrence's event and advance it (riverbed.schedules).
# The index spans every stream: it has no tag of a stream and is never in one script
# with a state.


def schedule_key(stream: str, name: str) -> str:
    """Hash: definition, next and last occurrence (ms since the epoch), counts, flags."""
    return f"{_tag(stream)}:schedule:{name}"


def schedule_index_key(scope: str | None = None) -> str:
    """Hash: schedule name -> logical stream of its state. ``scope`` keeps a separate set
    of schedules (tests); the services use the default."""
    return f"{PREFIX}:schedules" if scope is None else f"{PREFIX}:schedules:{scope}"
