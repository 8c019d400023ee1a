"""Endpoints, deliveries and attempts as values: what the registry and the log hold."""

from __future__ import annotations

import enum
import secrets
import time
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict


def new_id(prefix: str) -> str:
    """``<prefix>_`` + 12 hex digits of ms since the epoch + 16 random hex: sortable by creation."""
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


class DisabledReason(enum.StrEnum):
    GONE = "gone"  # the endpoint answered 410 Gone
    FAILING = "failing"  # it failed without a success for the health period
    MANUAL = "manual"  # an operator disabled it


class Endpoint(BaseModel):
    """A subscriber endpoint. ``secret`` signs; ``previous_secret`` too, until it expires."""

    model_config = ConfigDict(frozen=True)

    id: str
    url: str
    description: str = ""
    event_types: tuple[str, ...] = ()  # filters; empty: every event the service carries
    rate_limit_per_s: int | None = None  # requests per second; None: unlimited
    max_concurrency: int | None = None  # requests in flight per replica; None: the default
    enabled: bool = True
    disabled_reason: DisabledReason | None = None
    disabled_at: AwareDatetime | None = None
    secret: str
    previous_secret: str | None = None
    previous_secret_expires_at: AwareDatetime | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets to sign with at ``now``: the current one, and the old one during a grace."""
        found = [self.secret]
        if (
            self.previous_secret is not None
            and self.previous_secret_expires_at is not None
            and now < self.previous_secret_expires_at
        ):
            found.append(self.previous_secret)
        return found


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # a task is queued, no attempt yet
    RETRYING = "retrying"  # an attempt failed; another is scheduled
    SUCCEEDED = "succeeded"
    EXHAUSTED = "exhausted"  # every attempt of the schedule failed
    DROPPED = "dropped"  # not (or no longer) attempted: endpoint disabled, 410, or deleted


#: the statuses "replay every failed delivery" picks up
FAILED_STATUSES = (DeliveryStatus.EXHAUSTED, DeliveryStatus.DROPPED)
#: no task is working on a delivery in these: the log may prune it once it is old
FINISHED_STATUSES = (DeliveryStatus.SUCCEEDED, *FAILED_STATUSES)


class Delivery(BaseModel):
    """One event for one endpoint, across every task (first run and replays) and attempt."""

    model_config = ConfigDict(frozen=True)

    delivery_id: str
    endpoint_id: str
    event_id: str
    event_type: str
    event: dict[str, Any]  # the WebhookEvent, as the body carries it (kept for replays)
    status: DeliveryStatus
    task_id: str  # the latest task (CloudEvent id of its webhook.delivery.requested.v1)
    attempts: int  # attempts made, across every task
    last_status_code: int | None = None
    last_error: str | None = None
    last_attempt_at: AwareDatetime | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime


class Attempt(BaseModel):
    """One HTTP request (or the try of one) of a delivery: the delivery log's row."""

    model_config = ConfigDict(frozen=True)

    id: int | None = None  # assigned by the log
    delivery_id: str
    task_id: str
    endpoint_id: str
    event_id: str
    attempt: int  # 1-based within its task
    attempted_at: AwareDatetime
    succeeded: bool
    status_code: int | None = None
    duration_ms: int
    response_body: str | None = None  # truncated
    error: str | None = None
    error_kind: str | None = None  # timeout | connection | blocked | invalid_url
