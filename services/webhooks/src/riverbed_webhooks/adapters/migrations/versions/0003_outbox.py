"""The transactional outbox: outcome events queued with the record they report.

The runtime's outbox shape (``riverbed.outbox``), written out here so that this
migration stays what it was when later versions of the runtime change. Nothing to
migrate: the table starts empty.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from riverbed.sql import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_outbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(255), nullable=False, unique=True),
        sa.Column("stream", sa.String(255), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("published_at", UtcDateTime, nullable=True),
    )
    unpublished = sa.text("published_at IS NULL")
    op.create_index(
        "ix_webhook_outbox_unpublished",
        "webhook_outbox",
        ["id"],
        postgresql_where=unpublished,
        sqlite_where=unpublished,
    )
    op.create_index("ix_webhook_outbox_published_at", "webhook_outbox", ["published_at"])


def downgrade() -> None:
    op.drop_table("webhook_outbox")
