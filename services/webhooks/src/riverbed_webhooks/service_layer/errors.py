"""Errors of the use cases that a caller of the API can act on."""

from __future__ import annotations

from riverbed.errors import RiverbedError


class NotFound(RiverbedError, LookupError):
    def __init__(self, kind: str, id_: str) -> None:
        super().__init__(f"no {kind} with id {id_!r}")
        self.kind = kind
        self.id = id_


class Conflict(RiverbedError):
    """The request is valid but the resource's state forbids it (e.g. replay to a disabled one)."""


class Invalid(RiverbedError, ValueError):
    """A value the caller sent that is not accepted; the message says what is."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
