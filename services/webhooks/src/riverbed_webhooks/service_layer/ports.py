"""The ports the use cases need: small protocols, implemented in ``adapters/``, faked in tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from riverbed_contracts import CloudEvent
from riverbed_webhooks.domain.model import (
    Attempt,
    Delivery,
    DeliveryStatus,
    DisabledReason,
    Endpoint,
)


class EndpointRepository(Protocol):
    """Durable registry of endpoints."""

    async def add(self, endpoint: Endpoint) -> None: ...

    async def get(self, endpoint_id: str) -> Endpoint | None: ...

    async def page(self, *, limit: int, after: str | None = None) -> list[Endpoint]: ...

    async def list_enabled(self) -> list[Endpoint]: ...

    async def save(self, endpoint: Endpoint, *, reset_health: bool = False) -> None:
        """Write every configurable field of an existing endpoint (and stop the failure clock)."""
        ...

    async def delete(self, endpoint_id: str) -> bool: ...

    async def disable(
        self,
        endpoint_id: str,
        reason: DisabledReason,
        at: datetime,
        *,
        report: CloudEvent | None = None,
    ) -> Endpoint | None:
        """Disable if enabled; the endpoint when this call disabled it, None otherwise.

        Atomic, so that of many replicas seeing the same failure, one reports it: ``report``
        (``webhook.endpoint.disabled.v1``) is queued in the outbox in the same transaction,
        and only by the call that disabled it.
        """
        ...

    async def record_failure(self, endpoint_id: str, at: datetime) -> datetime | None:
        """Start the failure clock unless it runs; returns when it started (None: no endpoint)."""
        ...

    async def record_success(self, endpoint_id: str, at: datetime) -> None:
        """Stop the failure clock."""
        ...

    async def count_disabled(self) -> int: ...


class DeliveryLog(Protocol):
    """Every delivery and every attempt, queryable per endpoint and per event."""

    async def begin_task(self, delivery: Delivery) -> None:
        """Record a task of a delivery (first run or replay): status pending, task id set."""
        ...

    async def record_attempt(
        self,
        attempt: Attempt,
        status: DeliveryStatus,
        *,
        event_type: str,
        event: dict[str, object],
        emit: Sequence[CloudEvent] = (),
    ) -> None:
        """Add ``attempt``, set the delivery's status and last result, and queue ``emit`` (the
        events reporting the outcome) in the outbox: one transaction."""
        ...

    async def set_status(
        self,
        delivery_id: str,
        status: DeliveryStatus,
        *,
        error: str | None = None,
        at: datetime,
        emit: Sequence[CloudEvent] = (),
    ) -> None:
        """Set the delivery's status and queue ``emit`` in the outbox: one transaction."""
        ...

    async def attempts_in_task(self, task_id: str) -> int: ...

    async def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    async def failed_deliveries(
        self, endpoint_id: str, since: datetime, *, limit: int
    ) -> list[Delivery]: ...

    async def attempts_for_endpoint(
        self, endpoint_id: str, *, limit: int, before: int | None = None
    ) -> list[Attempt]: ...

    async def attempts_for_event(self, event_id: str, *, limit: int) -> list[Attempt]: ...

    async def deliveries_for_event(self, event_id: str) -> list[Delivery]: ...

    async def deliveries_for_endpoint(
        self, endpoint_id: str, *, limit: int, status: Sequence[DeliveryStatus] = ()
    ) -> list[Delivery]: ...


@dataclass(frozen=True)
class WebhookRequest:
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class SendResult:
    """What came back: a status (any, 2xx or not), or an error before a status arrived."""

    status_code: int | None
    duration_ms: int
    retry_after: str | None = None  # the raw Retry-After header
    body: str | None = None  # truncated response body
    error: str | None = None
    error_kind: str | None = None  # timeout | connection | blocked | invalid_url


class WebhookSender(Protocol):
    """Sends one signed request; never raises for what the network or receiver did."""

    async def send(self, request: WebhookRequest) -> SendResult: ...


class RateLimiter(Protocol):
    async def acquire(self, endpoint_id: str, per_second: int) -> int:
        """0 when a request may go now (and it is counted); else ms until one may."""
        ...


class ConcurrencyGate(Protocol):
    def try_acquire(self, endpoint_id: str, cap: int) -> bool: ...

    def release(self, endpoint_id: str) -> None: ...


class EndpointCache(Protocol):
    """Hot-path lookups, invalidated on every change of an endpoint."""

    async def endpoint(self, endpoint_id: str) -> Endpoint | None: ...

    async def endpoint_ids_for(self, event_type: str) -> list[str]: ...

    async def invalidate(self, endpoint_id: str) -> None: ...


class EventPublisher(Protocol):
    async def publish_many(self, events: Sequence[CloudEvent]) -> list[str]: ...


class Clock(Protocol):
    def __call__(self) -> datetime: ...
