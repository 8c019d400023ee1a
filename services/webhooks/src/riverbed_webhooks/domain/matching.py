"""Which endpoints get which event, and the delivery tasks fan-out makes for them.

An endpoint's ``event_types`` are filters. A filter matches an event type when it is

- the exact versioned type (``payment.succeeded.v1``);
- the type without its version (``payment.succeeded``: every version);
- a prefix ending in ``.*`` (``payment.*``: every payment type);
- ``*`` (everything).

No filters at all means every event the service carries.

Ids are deterministic: the delivery of event E to endpoint P has one id for its
whole life, and the fan-out task for it has one CloudEvent id, so that a
redelivered source event produces the same task ids and the delivery consumer's
idempotency drops the duplicates.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from riverbed.errors import RiverbedError
from riverbed_webhooks.domain.model import Endpoint

#: namespace of the uuid5 ids below and of the outcome events' (``domain.outcomes``);
#: fixed forever: changing it changes every id
ID_NAMESPACE: Final = uuid.UUID("5c1c8c1e-58f9-4a62-9f5b-8f8ef2a4b0a7")

FILTER_PATTERN: Final = re.compile(
    r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*|\.v[1-9][0-9]*)?)$"
)


class InvalidFilter(RiverbedError, ValueError):
    pass


def validate_filter(pattern: str) -> str:
    """``pattern`` if it is a valid filter; InvalidFilter saying what is accepted otherwise."""
    if not FILTER_PATTERN.match(pattern):
        raise InvalidFilter(
            f"invalid event type filter {pattern!r}: use a type ('payment.succeeded.v1'), "
            "a type without version ('payment.succeeded'), a prefix ('payment.*') or '*'"
        )
    return pattern


def filter_matches(pattern: str, event_type: str) -> bool:
    if pattern in ("*", event_type):
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    stream, _, version = event_type.rpartition(".v")
    return bool(version.isdigit() and pattern == stream)


def endpoint_matches(endpoint: Endpoint, event_type: str) -> bool:
    """Does ``endpoint`` (enabled, with these filters) want events of ``event_type``?"""
    if not endpoint.enabled:
        return False
    return not endpoint.event_types or any(
        filter_matches(pattern, event_type) for pattern in endpoint.event_types
    )


def matching_endpoint_ids(endpoints: Iterable[Endpoint], event_type: str) -> list[str]:
    """Ids of the endpoints that get ``event_type``, in a stable (id) order."""
    return sorted(e.id for e in endpoints if endpoint_matches(e, event_type))


def delivery_id(event_id: str, endpoint_id: str) -> str:
    """The one id of "event E to endpoint P", stable across attempts and replays."""
    return "dlv_" + uuid.uuid5(ID_NAMESPACE, f"delivery\n{endpoint_id}\n{event_id}").hex


def fanout_task_id(event_id: str, endpoint_id: str) -> str:
    """CloudEvent id of the first task of a delivery: the same on every fan-out of the event."""
    return str(uuid.uuid5(ID_NAMESPACE, f"task\n{endpoint_id}\n{event_id}"))


@dataclass(frozen=True)
class PlannedTask:
    """One delivery task fan-out will publish."""

    task_id: str
    delivery_id: str
    endpoint_id: str


def plan_tasks(event_id: str, endpoint_ids: Iterable[str]) -> list[PlannedTask]:
    """The tasks that deliver event ``event_id`` to each of ``endpoint_ids``."""
    return [
        PlannedTask(fanout_task_id(event_id, ep), delivery_id(event_id, ep), ep)
        for ep in endpoint_ids
    ]
