"""The service's tables (SQLAlchemy Core). The Alembic migrations create them; keep both in step.

How the database itself keeps the ledger honest (``ledger_sql()`` has the DDL), the
same way on SQLite and PostgreSQL:

- **Postings first, the header seals.** A transaction's postings are inserted before
  its ``ledger_transactions`` row. Inserting that header runs a trigger that refuses
  it unless the postings it covers number at least two and sum to zero in every
  currency. Once the header exists, a trigger refuses any further posting for it.
- **No orphan postings.** ``ledger_postings.transaction_id`` references the header
  with a foreign key checked at COMMIT (``DEFERRABLE INITIALLY DEFERRED``): postings
  whose header never came — the only way left to store an unbalanced set — make the
  commit fail. So every committed transaction is balanced, whatever code wrote it.
- **Append-only.** Triggers refuse UPDATE and DELETE on both tables (and TRUNCATE on
  PostgreSQL). Refunds and disputes are new, reversing transactions.
- **Amounts** are BIGINT minor units, never zero (CHECK); **currencies** three
  uppercase letters (CHECK; the code checks them against ISO 4217).
- **Provider ids are unique**: one transaction per (provider, kind, provider object id).

Times are stored in UTC; on SQLite, which has no time-zone type, as naive UTC strings
that come back aware (:class:`UtcDateTime`).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from riverbed.outbox import outbox_table
from riverbed.sql import BigId, UtcDateTime

metadata = MetaData()

accounts = Table(
    "ledger_accounts",
    metadata,
    Column("code", String(200), primary_key=True),
    Column("type", String(16), nullable=False),  # asset | income | expense
    Column("created_at", UtcDateTime, nullable=False),
)

transactions = Table(
    "ledger_transactions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(24), nullable=False),
    Column("provider", String(50), nullable=False),
    Column("provider_ref", String(255), nullable=False),
    Column("payment_ref", String(255), nullable=True),
    Column("reverses_id", String(36), ForeignKey("ledger_transactions.id"), nullable=True),
    Column("description", Text, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("event_id", String(255), nullable=False),
    UniqueConstraint(
        "provider", "kind", "provider_ref", name="uq_ledger_transactions_provider_ref"
    ),
)
Index("ix_ledger_transactions_payment", transactions.c.provider, transactions.c.payment_ref)
Index("ix_ledger_transactions_occurred", transactions.c.provider, transactions.c.occurred_at)

postings = Table(
    "ledger_postings",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "transaction_id",
        String(36),
        ForeignKey("ledger_transactions.id", deferrable=True, initially="DEFERRED"),
        nullable=False,
    ),
    Column("account", String(200), ForeignKey("ledger_accounts.code"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    CheckConstraint("amount <> 0", name="ck_ledger_postings_amount_nonzero"),
)
Index("ix_ledger_postings_transaction", postings.c.transaction_id)
Index("ix_ledger_postings_account", postings.c.account, postings.c.currency)

processed_messages = Table(
    "processed_messages",
    metadata,
    Column("consumer_group", String(100), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("stream", String(255), nullable=False),
    Column("event_type", String(255), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("processed_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("consumer_group", "event_id", name="pk_processed_messages"),
)

payment_failures = Table(
    "payment_failures",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("provider", String(50), nullable=False),
    Column("provider_payment_id", String(255), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("failure_code", String(255), nullable=False),
    Column("failure_message", Text, nullable=True),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("event_id", String(255), nullable=False),
)
Index(
    "ix_payment_failures_payment",
    payment_failures.c.provider,
    payment_failures.c.provider_payment_id,
)

# the runtime's outbox shape (riverbed.outbox): created by migration 0001 under these names
outbox = outbox_table(metadata, "outbox")

reports = Table(
    "reconciliation_reports",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("provider", String(50), nullable=False),
    Column("status", String(16), nullable=False),  # receiving processing completed failed
    Column("filename", String(255), nullable=True),
    Column("lines", Integer, nullable=False),
    Column("matched", Integer, nullable=False),
    Column("missing_in_ledger", Integer, nullable=False),
    Column("missing_at_provider", Integer, nullable=False),
    Column("amount_mismatch", Integer, nullable=False),
    Column("payouts", Integer, nullable=False),
    Column("payouts_unbalanced", Integer, nullable=False),
    Column("period_start", UtcDateTime, nullable=True),
    Column("period_end", UtcDateTime, nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("completed_at", UtcDateTime, nullable=True),
)
Index("ix_reconciliation_reports_created", reports.c.created_at)

report_lines = Table(
    "reconciliation_lines",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("report_id", String(40), ForeignKey("reconciliation_reports.id"), nullable=False),
    Column("line", Integer, nullable=True),  # None: a ledger transaction the report lacks
    Column("provider_txn_id", String(255), nullable=True),
    Column("type", String(32), nullable=False),
    Column("kind", String(24), nullable=False),
    Column("source", String(255), nullable=False),
    Column("amount", BigInteger, nullable=True),
    Column("fee", BigInteger, nullable=True),
    Column("net", BigInteger, nullable=True),
    Column("currency", String(3), nullable=False),
    Column("payout_id", String(255), nullable=True),
    Column("created", UtcDateTime, nullable=True),
    Column("class", String(24), nullable=True),  # None until matched
    Column("ledger_transaction_id", String(36), nullable=True),
    Column("ledger_amount", BigInteger, nullable=True),
    Column("ledger_fee", BigInteger, nullable=True),
    Column("ledger_net", BigInteger, nullable=True),
    Column("detail", Text, nullable=True),
)
Index("ix_reconciliation_lines_report", report_lines.c.report_id, report_lines.c.seq)
Index(
    "ix_reconciliation_lines_source",
    report_lines.c.report_id,
    report_lines.c.kind,
    report_lines.c.source,
)
Index(
    "ix_reconciliation_lines_class",
    report_lines.c.report_id,
    report_lines.c["class"],
    report_lines.c.seq,
)

report_payouts = Table(
    "reconciliation_payouts",
    metadata,
    Column("report_id", String(40), ForeignKey("reconciliation_reports.id"), nullable=False),
    Column("payout_id", String(255), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("gross", BigInteger, nullable=False),
    Column("fees", BigInteger, nullable=False),
    Column("refunds", BigInteger, nullable=False),
    Column("disputes", BigInteger, nullable=False),
    Column("payout_amount", BigInteger, nullable=True),
    Column("balanced", Boolean, nullable=False),
    Column("detail", Text, nullable=True),
    PrimaryKeyConstraint("report_id", "payout_id", "currency", name="pk_reconciliation_payouts"),
)


# -- the ledger's guards, per dialect -----------------------------------------------------

_SQLITE_GUARDS = (
    """
    CREATE TRIGGER ledger_transactions_balanced BEFORE INSERT ON ledger_transactions
    BEGIN
      SELECT RAISE(ABORT, 'ledger: a transaction needs at least 2 postings')
      WHERE (SELECT COUNT(*) FROM ledger_postings WHERE transaction_id = NEW.id) < 2;
      SELECT RAISE(ABORT, 'ledger: postings do not sum to zero in every currency')
      WHERE EXISTS (
        SELECT 1 FROM ledger_postings WHERE transaction_id = NEW.id
        GROUP BY currency HAVING SUM(amount) <> 0
      );
    END
    """,
    """
    CREATE TRIGGER ledger_postings_sealed BEFORE INSERT ON ledger_postings
    BEGIN
      SELECT RAISE(ABORT, 'ledger: the transaction is sealed; add a new transaction')
      WHERE EXISTS (SELECT 1 FROM ledger_transactions WHERE id = NEW.transaction_id);
    END
    """,
    *(
        f"""
        CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table}
        BEGIN
          SELECT RAISE(ABORT, 'ledger: {table} is append-only');
        END
        """
        for table in ("ledger_transactions", "ledger_postings")
        for verb in ("UPDATE", "DELETE")
    ),
)

_POSTGRES_GUARDS = (
    """
    CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
      IF (SELECT count(*) FROM ledger_postings WHERE transaction_id = NEW.id) < 2 THEN
        RAISE EXCEPTION 'ledger: transaction % needs at least 2 postings', NEW.id
          USING ERRCODE = 'check_violation';
      END IF;
      IF EXISTS (
        SELECT 1 FROM ledger_postings WHERE transaction_id = NEW.id
        GROUP BY currency HAVING sum(amount) <> 0
      ) THEN
        RAISE EXCEPTION 'ledger: postings of % do not sum to zero in every currency', NEW.id
          USING ERRCODE = 'check_violation';
      END IF;
      RETURN NEW;
    END $$
    """,
    """
    CREATE FUNCTION ledger_check_open() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
      IF EXISTS (SELECT 1 FROM ledger_transactions WHERE id = NEW.transaction_id) THEN
        RAISE EXCEPTION 'ledger: transaction % is sealed; add a new transaction',
          NEW.transaction_id USING ERRCODE = 'check_violation';
      END IF;
      RETURN NEW;
    END $$
    """,
    """
    CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'ledger: % is append-only', TG_TABLE_NAME
        USING ERRCODE = 'check_violation';
    END $$
    """,
    """
    CREATE TRIGGER ledger_transactions_balanced BEFORE INSERT ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced()
    """,
    """
    CREATE TRIGGER ledger_postings_sealed BEFORE INSERT ON ledger_postings
    FOR EACH ROW EXECUTE FUNCTION ledger_check_open()
    """,
    *(
        f"""
        CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION ledger_append_only()
        """
        for table in ("ledger_transactions", "ledger_postings")
    ),
    *(
        f"""
        CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()
        """
        for table in ("ledger_transactions", "ledger_postings")
    ),
)


def currency_check(dialect: str) -> str:
    """The CHECK that a posting's currency is three uppercase letters, for ``dialect``."""
    return "currency GLOB '[A-Z][A-Z][A-Z]'" if dialect == "sqlite" else "currency ~ '^[A-Z]{3}$'"


def ledger_guards(dialect: str) -> tuple[str, ...]:
    """The DDL of the ledger's triggers for ``dialect``."""
    if dialect == "sqlite":
        return _SQLITE_GUARDS
    if dialect == "postgresql":
        return _POSTGRES_GUARDS
    raise NotImplementedError(f"database {dialect!r} is not supported (SQLite, PostgreSQL)")
