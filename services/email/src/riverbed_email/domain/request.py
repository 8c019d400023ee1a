"""One delivery of an ``email.requested`` command, as the use case sees it."""

from __future__ import annotations

from dataclasses import dataclass

from riverbed_contracts import CloudEvent
from riverbed_contracts.email import SendEmail


@dataclass(frozen=True)
class EmailRequest:
    event: CloudEvent  # the request: its id names every record and outcome event
    email: SendEmail  # its payload, validated against the contract
    attempt: int  # which delivery of the request this is, 1 for the first

    @property
    def id(self) -> str:
        return self.event.id

    @property
    def to(self) -> str:
        return self.email.to
