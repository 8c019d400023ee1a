"""Ledger (accounts, transactions, postings and their guards), processed messages, payment
failures, the outbox, reconciliation reports.

Revision ID: 0001
Revises:
Create Date: 2026-05-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from riverbed.sql import UtcDateTime
from riverbed_payments.adapters.tables import currency_check, ledger_guards

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "ledger_accounts",
        sa.Column("code", sa.String(200), primary_key=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("provider", sa.String(50), nullable=False),
        sa.Column("provider_ref", sa.String(255), nullable=False),
        sa.Column("payment_ref", sa.String(255), nullable=True),
        sa.Column(
            "reverses_id", sa.String(36), sa.ForeignKey("ledger_transactions.id"), nullable=True
        ),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("occurred_at", UtcDateTime, nullable=False),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.UniqueConstraint(
            "provider", "kind", "provider_ref", name="uq_ledger_transactions_provider_ref"
        ),
    )
    op.create_index(
        "ix_ledger_transactions_payment", "ledger_transactions", ["provider", "payment_ref"]
    )
    op.create_index(
        "ix_ledger_transactions_occurred", "ledger_transactions", ["provider", "occurred_at"]
    )
    op.create_table(
        "ledger_postings",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "transaction_id",
            sa.String(36),
            sa.ForeignKey("ledger_transactions.id", deferrable=True, initially="DEFERRED"),
            nullable=False,
        ),
        sa.Column("account", sa.String(200), sa.ForeignKey("ledger_accounts.code"), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.CheckConstraint("amount <> 0", name="ck_ledger_postings_amount_nonzero"),
        sa.CheckConstraint(currency_check(dialect), name="ck_ledger_postings_currency"),
    )
    op.create_index("ix_ledger_postings_transaction", "ledger_postings", ["transaction_id"])
    op.create_index("ix_ledger_postings_account", "ledger_postings", ["account", "currency"])
    for statement in ledger_guards(dialect):
        op.execute(statement)

    op.create_table(
        "processed_messages",
        sa.Column("consumer_group", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("stream", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("processed_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("consumer_group", "event_id", name="pk_processed_messages"),
    )
    op.create_table(
        "payment_failures",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(50), nullable=False),
        sa.Column("provider_payment_id", sa.String(255), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("failure_code", sa.String(255), nullable=False),
        sa.Column("failure_message", sa.Text, nullable=True),
        sa.Column("occurred_at", UtcDateTime, nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
    )
    op.create_index(
        "ix_payment_failures_payment", "payment_failures", ["provider", "provider_payment_id"]
    )
    op.create_table(
        "outbox",
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
        "ix_outbox_unpublished",
        "outbox",
        ["id"],
        postgresql_where=unpublished,
        sqlite_where=unpublished,
    )
    op.create_index("ix_outbox_published_at", "outbox", ["published_at"])

    op.create_table(
        "reconciliation_reports",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("provider", sa.String(50), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("filename", sa.String(255), nullable=True),
        *(
            sa.Column(name, sa.Integer, nullable=False)
            for name in (
                "lines",
                "matched",
                "missing_in_ledger",
                "missing_at_provider",
                "amount_mismatch",
                "payouts",
                "payouts_unbalanced",
            )
        ),
        sa.Column("period_start", UtcDateTime, nullable=True),
        sa.Column("period_end", UtcDateTime, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("completed_at", UtcDateTime, nullable=True),
    )
    op.create_index("ix_reconciliation_reports_created", "reconciliation_reports", ["created_at"])
    op.create_table(
        "reconciliation_lines",
        sa.Column("seq", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "report_id",
            sa.String(40),
            sa.ForeignKey("reconciliation_reports.id"),
            nullable=False,
        ),
        sa.Column("line", sa.Integer, nullable=True),
        sa.Column("provider_txn_id", sa.String(255), nullable=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=True),
        sa.Column("fee", sa.BigInteger, nullable=True),
        sa.Column("net", sa.BigInteger, nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("payout_id", sa.String(255), nullable=True),
        sa.Column("created", UtcDateTime, nullable=True),
        sa.Column("class", sa.String(24), nullable=True),
        sa.Column("ledger_transaction_id", sa.String(36), nullable=True),
        sa.Column("ledger_amount", sa.BigInteger, nullable=True),
        sa.Column("ledger_fee", sa.BigInteger, nullable=True),
        sa.Column("ledger_net", sa.BigInteger, nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
    )
    op.create_index("ix_reconciliation_lines_report", "reconciliation_lines", ["report_id", "seq"])
    op.create_index(
        "ix_reconciliation_lines_source",
        "reconciliation_lines",
        ["report_id", "kind", "source"],
    )
    op.create_index(
        "ix_reconciliation_lines_class", "reconciliation_lines", ["report_id", "class", "seq"]
    )
    op.create_table(
        "reconciliation_payouts",
        sa.Column(
            "report_id",
            sa.String(40),
            sa.ForeignKey("reconciliation_reports.id"),
            nullable=False,
        ),
        sa.Column("payout_id", sa.String(255), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("gross", sa.BigInteger, nullable=False),
        sa.Column("fees", sa.BigInteger, nullable=False),
        sa.Column("refunds", sa.BigInteger, nullable=False),
        sa.Column("disputes", sa.BigInteger, nullable=False),
        sa.Column("payout_amount", sa.BigInteger, nullable=True),
        sa.Column("balanced", sa.Boolean, nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint(
            "report_id", "payout_id", "currency", name="pk_reconciliation_payouts"
        ),
    )


def downgrade() -> None:
    for table in (
        "reconciliation_payouts",
        "reconciliation_lines",
        "reconciliation_reports",
        "outbox",
        "payment_failures",
        "processed_messages",
        "ledger_postings",
        "ledger_transactions",
        "ledger_accounts",
    ):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        for function in ("ledger_check_balanced", "ledger_check_open", "ledger_append_only"):
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
