"""The base of every versioned payload model (the ``data`` of an event)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints


class Payload(BaseModel):
    """Base of every payload: immutable, and tolerant of fields it does not know.

    ``extra="ignore"``: within a version, producers may add optional fields
    (README: versioning rules). A consumer deployed before such a field existed
    must still accept the event, so unknown fields are dropped when reading
    rather than rejected. Typos in *optional* fields therefore go unnoticed;
    that is the price of rolling deployments without lockstep upgrades.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)


#: an opaque identifier: non-empty, no surrounding whitespace, at most 255 characters
Id = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^\S(.*\S)?$")]
