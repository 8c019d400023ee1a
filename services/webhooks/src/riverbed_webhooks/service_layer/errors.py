"""Errors of the use cases that a caller of the API can act on."""

from __future__ import annotations


class NotFound(LookupError):
    def __init__(self, kind: str, id_: str) -> None:
        super().__init__(f"no {kind} with id {id_!r}")
        self.kind = kind
        self.id = id_


class Conflict(Exception):
    """The request is valid but the resource's state forbids it (e.g. replay to a disabled one)."""


class Invalid(ValueError):
    """A value the caller sent that is not accepted; the message says what is."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
