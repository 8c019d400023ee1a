"""What services that own a SQL database share: UTC times, ids, migrations (``riverbed[sql]``).

The transactional outbox they share is :mod:`riverbed.outbox`.

SQLAlchemy 2 and Alembic are an optional extra of the runtime: only services with a
database (webhooks, payments) import this module.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import Field, SecretStr
from sqlalchemy import BigInteger, Connection, DateTime, Integer, MetaData, text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import TypeDecorator

from riverbed.settings import ServiceSettings

log = structlog.get_logger(__name__)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime in, an aware UTC datetime out, on every dialect.

    SQLite has no time-zone type: times are stored there as naive UTC strings.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: BIGINT autoincrement on PostgreSQL; SQLite only autoincrements INTEGER PRIMARY KEY
BigId = BigInteger().with_variant(Integer(), "sqlite")


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The SQLAlchemy URL of an SQLite file."""
    return f"sqlite+aiosqlite:///{Path(path)}"


def run_migrations_in_env(metadata: MetaData, *, service: str) -> None:
    """The body of a service's Alembic ``env.py``: migrate on the connection that
    :meth:`Migrations.upgrade` handed over (there is no alembic.ini; migrations run from
    the service, at start-up or with ``riverbed-<service> migrate``)."""
    from alembic import context  # only importable while Alembic runs an env.py

    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            f"run the {service} migrations with `riverbed-{service} migrate` (or at start-up "
            f"with {service.upper()}_MIGRATE_ON_START=true), not with the alembic command"
        )
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
    )
    with context.begin_transaction():
        context.run_migrations()


class Migrations:
    """A service's Alembic migrations, applied at start-up or by an operator command.

    On PostgreSQL an advisory lock (``lock_key``, a constant unique to the service)
    serialises replicas that start together; SQLite's write lock does the same.
    """

    def __init__(self, directory: Path, *, lock_key: int) -> None:
        self.directory = directory
        self.lock_key = lock_key

    def _config(self, connection: Connection | None = None) -> Config:
        config = Config()
        config.set_main_option("script_location", str(self.directory))
        if connection is not None:
            config.attributes["connection"] = connection
        return config

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self._config()).get_current_head()

    def _upgrade(self, connection: Connection) -> str | None:
        before = MigrationContext.configure(connection).get_current_revision()
        command.upgrade(self._config(connection), "head")
        after = MigrationContext.configure(connection).get_current_revision()
        if before != after:
            log.info("database migrated", revision_before=before, revision=after)
        return after

    async def upgrade(self, engine: AsyncEngine) -> str | None:
        """Apply every migration not yet applied; returns the revision the database is at."""
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": self.lock_key}
                )
            return await conn.run_sync(self._upgrade)

    async def upgrade_and_close(self, engine: AsyncEngine) -> str | None:
        """``upgrade``, then dispose of the engine: the ``<service> migrate`` command."""
        try:
            return await self.upgrade(engine)
        finally:
            await engine.dispose()

    async def current_revision(self, engine: AsyncEngine) -> str | None:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )


class DatabaseServiceSettings(ServiceSettings):
    """Settings every service that owns a database has (its own prefix still applies).

    Subclasses set ``database_url``'s default (``<PREFIX>DATABASE_URL``).
    """

    database_url: SecretStr = Field(
        default=SecretStr("sqlite+aiosqlite:///var/riverbed.db"),
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://…",
    )
    database_schema: str | None = Field(
        default=None,
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL schema of the tables (search_path); default: the user's",
    )
    migrate_on_start: bool = Field(
        default=True, description="apply pending migrations at start-up (else: `migrate`)"
    )

    # -- the transactional outbox (riverbed.outbox) --------------------------------------
    outbox_batch_size: int = Field(default=200, ge=1, le=10_000, description="events per pass")
    outbox_poll_interval_s: float = Field(
        default=0.5, gt=0, description="relay pass when no commit in this process wakes it, s"
    )
    outbox_retention_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="how long published rows are kept, s"
    )
    outbox_max_backoff_s: float = Field(
        default=5.0, gt=0, description="longest wait between relay passes that fail, s"
    )
