"""The service's tables (SQLAlchemy Core). The Alembic migrations create them; keep both in step.

Times are stored in UTC. On SQLite, which has no time-zone type, they are naive
UTC strings and come back aware (:class:`UtcDateTime`).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from riverbed.outbox import outbox_table
from riverbed.sql import BigId, UtcDateTime

metadata = MetaData()

endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("event_types", JSON, nullable=False),
    Column("rate_limit_per_s", Integer, nullable=True),
    Column("max_concurrency", Integer, nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_reason", String(16), nullable=True),
    Column("disabled_at", UtcDateTime, nullable=True),
    Column("secret", Text, nullable=False),
    Column("previous_secret", Text, nullable=True),
    Column("previous_secret_expires_at", UtcDateTime, nullable=True),
    Column("failing_since", UtcDateTime, nullable=True),
    Column("last_success_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)
Index("ix_webhook_endpoints_enabled", endpoints.c.enabled)

deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("delivery_id", String(64), primary_key=True),
    Column("endpoint_id", String(64), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("event_type", String(255), nullable=False),
    Column("event", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("task_id", String(64), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("last_attempt_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)
Index(
    "ix_webhook_deliveries_endpoint_status",
    deliveries.c.endpoint_id,
    deliveries.c.status,
    deliveries.c.created_at,
)
Index("ix_webhook_deliveries_event", deliveries.c.event_id)
# pruning finds finished deliveries by age (migration 0002)
Index("ix_webhook_deliveries_status_updated", deliveries.c.status, deliveries.c.updated_at)

attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("delivery_id", String(64), nullable=False),
    Column("task_id", String(64), nullable=False),
    Column("endpoint_id", String(64), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("attempted_at", UtcDateTime, nullable=False),
    Column("succeeded", Boolean, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("duration_ms", Integer, nullable=False),
    Column("response_body", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("error_kind", String(32), nullable=True),
)
Index("ix_webhook_attempts_endpoint", attempts.c.endpoint_id, attempts.c.id)
Index("ix_webhook_attempts_event", attempts.c.event_id, attempts.c.id)
Index("ix_webhook_attempts_task", attempts.c.task_id)
Index("ix_webhook_attempts_delivery", attempts.c.delivery_id)  # pruning (migration 0002)

# the events reporting what the tables above record, queued in the same transactions and
# appended to their streams by the runtime's relay (riverbed.outbox; migration 0003)
outbox = outbox_table(metadata, "webhook_outbox")
