"""Endpoints, deliveries and delivery attempts.

Revision ID: 0001
Revises:
Create Date: 2026-05-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from riverbed.sql import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("event_types", sa.JSON, nullable=False),
        sa.Column("rate_limit_per_s", sa.Integer, nullable=True),
        sa.Column("max_concurrency", sa.Integer, nullable=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("disabled_reason", sa.String(16), nullable=True),
        sa.Column("disabled_at", UtcDateTime, nullable=True),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("previous_secret", sa.Text, nullable=True),
        sa.Column("previous_secret_expires_at", UtcDateTime, nullable=True),
        sa.Column("failing_since", UtcDateTime, nullable=True),
        sa.Column("last_success_at", UtcDateTime, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_webhook_endpoints_enabled", "webhook_endpoints", ["enabled"])

    op.create_table(
        "webhook_deliveries",
        sa.Column("delivery_id", sa.String(64), primary_key=True),
        sa.Column("endpoint_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("event", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_status_code", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_attempt_at", UtcDateTime, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_index(
        "ix_webhook_deliveries_endpoint_status",
        "webhook_deliveries",
        ["endpoint_id", "status", "created_at"],
    )
    op.create_index("ix_webhook_deliveries_event", "webhook_deliveries", ["event_id"])

    op.create_table(
        "webhook_attempts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.String(64), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("endpoint_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("attempted_at", UtcDateTime, nullable=False),
        sa.Column("succeeded", sa.Boolean, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("response_body", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("error_kind", sa.String(32), nullable=True),
    )
    op.create_index("ix_webhook_attempts_endpoint", "webhook_attempts", ["endpoint_id", "id"])
    op.create_index("ix_webhook_attempts_event", "webhook_attempts", ["event_id", "id"])
    op.create_index("ix_webhook_attempts_task", "webhook_attempts", ["task_id"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
