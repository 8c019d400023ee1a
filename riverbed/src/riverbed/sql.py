"""What services that own a SQL database share (``riverbed[sql]``): UTC times, ids, the
database settings, migrations and what a service does with them at start-up and in its
``migrate`` command.

The transactional outbox they share is :mod:`riverbed.outbox`.

SQLAlchemy 2 and Alembic are an optional extra of the runtime: only services with a
database (webhooks, payments) import this module.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict
from sqlalchemy import BigInteger, Connection, DateTime, Integer, MetaData, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator

from riverbed.logging import configure_logging
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


#: execution option of :func:`read_only` engines: on SQLite with ``immediate_writes``,
#: their transactions begin deferred (plain ``BEGIN``)
READ_ONLY: Final = "riverbed_read_only"


def create_engine(
    url: str,
    *,
    schema: str | None = None,
    connect_args: Mapping[str, Any] | None = None,
    busy_timeout_ms: int = 5_000,
    foreign_keys: bool = False,
    immediate_writes: bool = False,
) -> AsyncEngine:
    """An async engine for ``url``, the one shape every service with a database opens.

    ``schema`` (PostgreSQL only): the schema the tables live in (the connection's
    search_path). Error messages never show statement parameters (``hide_parameters``:
    they may be signing secrets or payment data). SQLite gets its file's directory made,
    WAL (readers do not block the writer), ``busy_timeout_ms`` to wait for a lock, and,
    as a service needs them, ``foreign_keys`` on and ``immediate_writes``: every
    transaction begins ``BEGIN IMMEDIATE`` (it takes the write lock at once, so two writers
    queue on the busy timeout instead of one failing when it upgrades a read lock), except
    on a :func:`read_only` engine.
    """
    parsed = make_url(url)
    args = dict(connect_args or {})
    if schema is not None:
        if parsed.get_backend_name() != "postgresql":
            raise ValueError("a database schema can be set for PostgreSQL only")
        args.setdefault("server_settings", {})["search_path"] = schema
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True, connect_args=args, hide_parameters=True)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args=args, hide_parameters=True)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        if immediate_writes:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if foreign_keys:
            cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    if immediate_writes:

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(connection: Any) -> None:
            deferred = connection.get_execution_options().get(READ_ONLY, False)
            connection.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

    return engine


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` for reads: on SQLite with ``immediate_writes`` its transactions do not
    take the write lock."""
    return engine.execution_options(**{READ_ONLY: True})


def upsert(dialect: str, table: Any) -> Any:
    """INSERT … ON CONFLICT for ``dialect`` (SQLite and PostgreSQL spell it the same way,
    from different modules)."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"database {dialect!r} is not supported (SQLite, PostgreSQL)")


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
    ``service`` (``"webhooks"``) names the service in messages: its ``riverbed-<service>
    migrate`` command and its ``<SERVICE>_MIGRATE_ON_START`` variable.
    """

    def __init__(self, directory: Path, *, lock_key: int, service: str) -> None:
        self.directory = directory
        self.lock_key = lock_key
        self.service = service

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


def database_url_field(default_file: str) -> Any:
    """The ``database_url`` setting, by default the SQLite file ``default_file`` (relative to
    the working directory): a service's settings declare
    ``database_url: SecretStr = database_url_field("var/<service>/<service>.db")``."""
    return Field(
        default=SecretStr(sqlite_url(default_file)),
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://…",
    )


class DatabaseServiceSettings(ServiceSettings):
    """Settings every service that owns a database has (its own prefix still applies).

    Subclasses set ``database_url``'s default with :func:`database_url_field`
    (``<PREFIX>DATABASE_URL``) and their ``env_prefix``:
    ``model_config = SettingsConfigDict(env_prefix="WEBHOOKS_")``, merged with this one.
    """

    # hide_input_in_errors: a refused value may be a database URL with its password (or an
    # admin key), and a settings error ends up in the start-up log
    model_config = SettingsConfigDict(
        extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    database_url: SecretStr = database_url_field("var/riverbed.db")
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


class EngineFactory(Protocol):
    """A service's ``create_engine``: the engine of ``url``, its tables in PostgreSQL schema
    ``schema`` (None: the user's)."""

    def __call__(self, url: str, *, schema: str | None = None) -> AsyncEngine: ...


def create_engine_from(
    settings: DatabaseServiceSettings, create_engine: EngineFactory
) -> AsyncEngine:
    """The engine of the database ``settings`` name (``database_url``, ``database_schema``)."""
    return create_engine(settings.database_url.get_secret_value(), schema=settings.database_schema)


async def prepare_database(
    engine: AsyncEngine, migrations: Migrations, *, migrate_on_start: bool
) -> str | None:
    """Make the database fit to serve at start-up; returns the revision it is at.

    ``migrate_on_start``: apply the pending migrations. Otherwise an operator migrates
    (``riverbed-<service> migrate``) before the rollout, and a database at another revision
    than the code's head is refused (RuntimeError) rather than served with the wrong schema.
    """
    if migrate_on_start:
        return await migrations.upgrade(engine)
    current, head = await migrations.current_revision(engine), migrations.head_revision()
    if current != head:
        service = migrations.service
        raise RuntimeError(
            f"the {service} database is at revision {current}, the code needs {head}: "
            f"run `riverbed-{service} migrate` (or set {service.upper()}_MIGRATE_ON_START=true)"
        )
    return current


@asynccontextmanager
async def prepared_database(
    settings: DatabaseServiceSettings, migrations: Migrations, create_engine: EngineFactory
) -> AsyncIterator[AsyncEngine]:
    """The service's engine for the length of the block (a lifespan), the database
    prepared by :func:`prepare_database`; disposed of on the way out, however it is left."""
    engine = create_engine_from(settings, create_engine)
    try:
        await prepare_database(engine, migrations, migrate_on_start=settings.migrate_on_start)
        yield engine
    finally:
        await engine.dispose()


def migrate(
    settings: DatabaseServiceSettings, migrations: Migrations, create_engine: EngineFactory
) -> int:
    """The ``riverbed-<service> migrate`` command: apply the pending migrations, print the
    revision the database is at; returns the exit status (0)."""
    configure_logging(settings.log_level, settings.log_format, service=settings.service_name)
    engine = create_engine_from(settings, create_engine)
    revision = asyncio.run(migrations.upgrade_and_close(engine))
    print(f"{migrations.service} database at revision {revision}")
    return 0
