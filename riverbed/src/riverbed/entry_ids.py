"""Redis stream entry ids (``<ms>-<seq>``) and the bytes redis-py hands back for them.

Every part of the runtime that reads ids out of Redis replies (publisher, consumer,
delay store, monitor, operator CLI) needs the same few operations; they live here so
that there is one reading of what an id is and how the next one is spelled.
"""

from __future__ import annotations

import re
from typing import Any

#: the explicit id form XADD returns and XRANGE accepts: milliseconds, then a sequence
_ENTRY_ID = re.compile(r"^\d+-\d+$")


def as_text(value: Any, *, errors: str = "strict") -> str:
    """``value`` as ``str``: redis-py replies are bytes or str depending on ``decode_responses``.

    ``errors`` is :meth:`bytes.decode`'s; ``"replace"`` suits text shown to a person, where a
    stray byte must not stop the listing. Anything else than bytes goes through ``str()``.
    """
    return value.decode(errors=errors) if isinstance(value, bytes) else str(value)


def id_ms(entry_id: str) -> int:
    """The Unix time in milliseconds at which Redis (or the writer) stamped ``entry_id``."""
    return int(entry_id.split("-", 1)[0])


def next_id(entry_id: str) -> str:
    """The smallest id after ``entry_id``: an inclusive XRANGE start that skips ``entry_id``."""
    ms, seq = entry_id.split("-", 1)
    return f"{ms}-{int(seq) + 1}"


def id_order(entry_id: str) -> tuple[int, ...]:
    """A sort key that orders ids as Redis does (numerically, not as strings)."""
    return tuple(int(part) for part in entry_id.split("-"))


def is_entry_id(entry_id: str) -> bool:
    """Whether ``entry_id`` is a whole ``<ms>-<seq>`` id (not ``-``, ``+``, ``$`` or ``<ms>``)."""
    return bool(_ENTRY_ID.match(entry_id))


def check_entry_id(entry_id: str) -> str:
    """``entry_id`` unchanged if :func:`is_entry_id`; otherwise ``ValueError`` saying so."""
    if not is_entry_id(entry_id):
        raise ValueError(f"{entry_id!r} is not a stream entry id: give <ms>-<seq>")
    return entry_id
