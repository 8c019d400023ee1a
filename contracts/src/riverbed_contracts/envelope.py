"""The CloudEvents 1.0 envelope and its exact form in a Redis stream entry.

A stream entry's ``event`` field holds the event as a CloudEvents 1.0 JSON document
(structured content mode, UTF-8); a retry appended again by the runtime also names its
consumer group, attempt and first-seen time in fields of their own. Any language with a
Redis client and a JSON parser can read it; see ``docs/wire-format.md``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

#: the one field of a stream entry; its value is the CloudEvents JSON document
ENTRY_FIELD: Final = "event"
#: how deep JSON may nest where events enter Riverbed (the gateway's request bodies): objects
#: and arrays inside each other, the outermost counting 1. Every reader must decode what is
#: accepted, and readers differ in how deep they can go (CPython's json and pydantic stop
#: about 200 levels down, other languages elsewhere), so the limit stays far below them all.
MAX_JSON_DEPTH: Final = 64
SPECVERSION: Final = "1.0"
DEFAULT_SOURCE: Final = "urn:riverbed"

# CloudEvents 1.0: attribute names MUST be lowercase ASCII letters or digits.
_ATTRIBUTE_NAME = re.compile(r"^[a-z0-9]+$")


#: the version (4) and variant (RFC 4122) bits of a random UUID
_UUID4_BITS = (4 << 76) | (2 << 62)
_UUID4_MASK = ~((0xF << 76) | (3 << 62)) & ((1 << 128) - 1)


def new_event_id() -> str:
    """A fresh event id: a random (version 4) UUID in canonical text form.

    From ``random`` rather than ``os.urandom``: ids must be unique, not secret, and
    the system call per id was a measurable share of the gateway's time. Python
    reseeds ``random`` in a forked child, so worker processes do not repeat ids.
    """
    # formatted directly: a uuid.UUID object per id cost as much again (0.6 vs 1.4 µs)
    digits = f"{(random.getrandbits(128) & _UUID4_MASK) | _UUID4_BITS:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def nested_deeper_than(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether decoded JSON ``value`` nests objects and arrays more than ``limit`` levels deep
    (``{}`` and ``[]`` are 1 level, a scalar 0). Stops at the first branch past the limit, so
    it recurses at most ``limit`` calls deep whatever the input."""
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    if limit <= 0:
        return True
    for child in children:
        kind = type(child)  # exact types: what json.loads makes, and cheaper than isinstance
        if (kind is dict or kind is list) and nested_deeper_than(child, limit - 1):
            return True
    return False


def utc_now() -> datetime:
    return datetime.now(UTC)


class CloudEvent(BaseModel):
    """One event in CloudEvents 1.0 attribute names, with ``data`` as a JSON object.

    ``data`` is kept as a plain dict here; the registry validates it against the
    payload model of ``type``. Extension attributes are lowercase alphanumerics
    as CloudEvents requires (``correlationid``, ``causationid``, ``traceparent``).
    """

    # Unknown extension attributes are kept, not rejected: a producer that adds
    # one (say ``tracestate``) must not break consumers deployed before it, and
    # CloudEvents asks intermediaries to pass extensions on.
    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        json_schema_extra={"propertyNames": {"pattern": _ATTRIBUTE_NAME.pattern}},
    )

    id: str = Field(default_factory=new_event_id, min_length=1, max_length=255)
    source: str = Field(default=DEFAULT_SOURCE, min_length=1)
    type: str = Field(min_length=1)
    specversion: Literal["1.0"] = SPECVERSION
    # RFC 3339 needs an offset, so a naive datetime is refused rather than guessed.
    time: AwareDatetime = Field(default_factory=utc_now)
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]
    correlationid: str | None = None
    causationid: str | None = None
    traceparent: str | None = None

    @model_validator(mode="after")
    def _extension_names_are_lowercase_alphanumeric(self) -> CloudEvent:
        extensions = self.model_extra
        if not extensions:  # the usual event: 0.35 µs of the 2.5 µs a validation takes
            return self
        bad = sorted(name for name in extensions if not _ATTRIBUTE_NAME.match(name))
        if bad:
            raise ValueError(
                f"invalid CloudEvents attribute name(s) {bad}: "
                "extension attributes are lowercase ASCII letters and digits only"
            )
        return self

    def to_json(self) -> str:
        """The structured-mode JSON document (absent optional attributes are omitted)."""
        return self.model_dump_json(exclude_none=True)

    def to_entry(self) -> dict[str, str]:
        """The field/value pairs of the Redis stream entry that carries this event."""
        return {ENTRY_FIELD: self.to_json()}

    def caused(self, type: str, data: dict[str, Any], **attributes: Any) -> CloudEvent:
        """A follow-up event: same correlation id, this event as its cause."""
        return CloudEvent(
            type=type,
            data=data,
            correlationid=self.correlationid or self.id,
            causationid=self.id,
            traceparent=self.traceparent,
            **attributes,
        )


class EntryDecodeError(ValueError):
    """A stream entry that is not a Riverbed event (permanent: retrying cannot help)."""


#: a stream entry's fields as redis-py returns them (bytes, or str with decode_responses)
EntryFields = (
    Mapping[bytes, bytes | str] | Mapping[str, str | bytes] | Mapping[bytes | str, bytes | str]
)


def event_from_entry(fields: EntryFields) -> CloudEvent:
    """Parse a stream entry's fields (str or bytes keys, as redis-py returns them).

    Fields other than ``event`` are ignored, so that a later writer may add one.
    """
    raw: str | bytes | None = None
    names: list[str] = []
    for key, value in fields.items():
        name = key.decode(errors="replace") if isinstance(key, bytes) else key
        names.append(name)
        if name == ENTRY_FIELD:
            raw = value
    if raw is None:
        raise EntryDecodeError(
            f"stream entry has no {ENTRY_FIELD!r} field (fields: {sorted(names)}); "
            f"Riverbed entries carry one field {ENTRY_FIELD!r} holding a CloudEvents JSON document"
        )
    return event_from_json(raw)


def event_from_json(document: str | bytes) -> CloudEvent:
    """Parse the value of a stream entry's ``event`` field."""
    try:
        return CloudEvent.model_validate_json(document)
    except ValueError as error:  # pydantic.ValidationError, also for malformed JSON
        raise EntryDecodeError(
            f"entry field {ENTRY_FIELD!r} is not a CloudEvents 1.0 JSON document: {error}"
        ) from error
