"""Turning a stream entry into what the consumer works with: its routing (a promoted
retry's group, attempt and first-seen time) and its event, or why it has none.

The event's id is needed before its document is parsed: the read loop checks a batch's ids
against the idempotency set in the same round trip that reads the next batch, and parses
each document only when its handler is about to run, while that round trip is on its way.
Riverbed's writers put the id first (``{"id":"…",``), so :func:`sniffed_event_id` reads it
off the document's first bytes; any other document is parsed at once instead.
"""

from __future__ import annotations

import re
from typing import Final

from riverbed.delay import ATTEMPT_FIELD, FIRST_SEEN_FIELD, GROUP_FIELD
from riverbed.entry_ids import id_ms
from riverbed_contracts import CloudEvent, EntryDecodeError, event_from_entry, event_from_json
from riverbed_contracts.envelope import ENTRY_FIELD

EVENT_FIELD: Final = ENTRY_FIELD.encode()
_GROUP_FIELD: Final = GROUP_FIELD.encode()
_ATTEMPT_FIELD: Final = ATTEMPT_FIELD.encode()
_FIRST_SEEN_FIELD: Final = FIRST_SEEN_FIELD.encode()
#: how a document Riverbed wrote begins: its id is the first attribute, without spaces
#: (matched up to its closing quote, but never past an escape or a control character)
_ID_FIRST: Final = re.compile(rb'\{"id":"([^"\\\x00-\x1f]+)"').match


def carried_routing(fields: dict[bytes, bytes], entry_id: str) -> tuple[bytes | None, int, int]:
    """(target group or None, attempt carried, first seen ms) of an entry: a promoted retry
    carries all three; a first publication none (attempt 1, first seen = the entry's time)."""
    target = fields.get(_GROUP_FIELD)
    attempt = fields.get(_ATTEMPT_FIELD)
    first_seen = fields.get(_FIRST_SEEN_FIELD)
    try:
        return (
            target,
            int(attempt) if attempt is not None else 1,
            int(first_seen) if first_seen is not None else id_ms(entry_id),
        )
    except ValueError:  # a hand-written entry with a bad number: count from here
        return target, 1, id_ms(entry_id)


def decoded_event(fields: dict[bytes, bytes], event_json: bytes | None) -> CloudEvent | Exception:
    """The event of an entry (``event_json``: its ``event`` field when that is its only
    one, for the shorter path), or why it is not one."""
    try:
        return event_from_json(event_json) if event_json is not None else event_from_entry(fields)
    except EntryDecodeError as error:
        return error


def sniffed_event_id(event_json: bytes) -> str | None:
    """The event's id when its document begins with it (``{"id":"…",``), read without
    parsing the document (~0.35 µs against several for the parse); None otherwise. An id
    holding an escape is left to the parser, which alone knows what it stands for; one
    holding a control character is left to it too (it refuses the document). So a sniffed
    id needs no escaping in JSON (:func:`plain_ids_json`)."""
    found = _ID_FIRST(event_json)
    if found is None:
        return None
    try:
        return found[1].decode()
    except UnicodeDecodeError:
        return None


def plain_ids_json(event_ids: list[str]) -> str:
    """The JSON array of ids as :func:`sniffed_event_id` returns them (no quote, backslash
    or control character: nothing to escape), without an encoder pass."""
    return '["' + '","'.join(event_ids) + '"]' if event_ids else "[]"


def event_when_handled(fields: dict[bytes, bytes], sniffed_id: str) -> CloudEvent | Exception:
    """Parse the event whose id was sniffed. The parse must find the same id: a document
    naming ``id`` twice means one id to a parser that keeps the first and another to one
    that keeps the last, so its meaning depends on the reader, and it is refused."""
    event = decoded_event(fields, fields.get(EVENT_FIELD))
    if isinstance(event, CloudEvent) and event.id != sniffed_id:
        return EntryDecodeError(
            f"the event's JSON names 'id' more than once ({sniffed_id!r} first, {event.id!r} "
            "last): JSON parsers disagree on which one counts, so the event has no one id"
        )
    return (
        event if isinstance(event, CloudEvent | EntryDecodeError) else EntryDecodeError(str(event))
    )


def event_id_of(parsed: CloudEvent | Exception | str) -> str | None:
    """The event id of a read entry: its event's, or the one sniffed before parsing."""
    if type(parsed) is str:
        return parsed
    return parsed.id if isinstance(parsed, CloudEvent) else None
