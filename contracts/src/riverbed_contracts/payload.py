"""The base of every versioned payload model (the ``data`` of an event)."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Final

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, StringConstraints


class Payload(BaseModel):
    """Base of every payload: immutable, and tolerant of fields it does not know.

    ``extra="ignore"``: within a version, producers may add optional fields
    (README: versioning rules). A consumer deployed before such a field existed
    must still accept the event, so unknown fields are dropped when reading
    rather than rejected. Typos in *optional* fields therefore go unnoticed;
    that is the price of rolling deployments without lockstep upgrades.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)


#: every character some regular-expression dialect counts as white space: ECMA-262's \s
#: (what JSON Schema validators in other languages use), Python's and Rust's (pydantic's).
#: Written out because ``\S`` differs between them: U+0085 is white space to Python and
#: Rust, not to ECMA-262; U+FEFF to ECMA-262 only; U+001C-U+001F to Python only
_ANY_WHITE_SPACE: Final = (
    r"\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
#: ECMA-262's ``.`` (every character but a line terminator), written out for the same reason
_NO_LINE_BREAK: Final = r"[^\n\r\u2028\u2029]"

#: an opaque identifier: non-empty, no surrounding white space (in any reading), no line
#: break inside, at most 255 characters; every JSON Schema validator and the contracts
#: accept and refuse the same ids
Id = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=255,
        pattern=f"^[^{_ANY_WHITE_SPACE}]({_NO_LINE_BREAK}*[^{_ANY_WHITE_SPACE}])?$",
    ),
]


#: an RFC 3339 date-time with an offset, as JSON Schema's date-time format has it
_RFC3339: Final = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_ISO_DATE: Final = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _rfc3339_text(value: Any) -> Any:
    # pydantic would also read a number (or a string of digits) as Unix seconds, and a space
    # for the T: the JSON Schemas promise other languages an RFC 3339 string, so that is all
    # that is taken from JSON (a datetime object from Python code is taken too)
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC3339.match(value)):
        return value
    raise ValueError("give an RFC 3339 date-time with an offset, e.g. 2024-05-01T12:00:00Z")


def _date_text(value: Any) -> Any:
    if (isinstance(value, date) and not isinstance(value, datetime)) or (
        isinstance(value, str) and _ISO_DATE.match(value)
    ):
        return value
    raise ValueError("give a date as YYYY-MM-DD, e.g. 2024-05-03")


#: a point in time: an RFC 3339 string with an offset in JSON, never a number
Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]
#: a calendar date: YYYY-MM-DD in JSON, never a number or a date-time
CalendarDate = Annotated[date, BeforeValidator(_date_text)]
