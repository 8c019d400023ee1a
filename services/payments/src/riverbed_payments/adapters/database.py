"""The payments database engine: SQLite or PostgreSQL over SQLAlchemy 2 (async).

SQLite: every write transaction starts with ``BEGIN IMMEDIATE`` (it takes the write
lock at once, so two writers queue on ``busy_timeout`` instead of one failing when it
upgrades a read lock), and foreign keys are on (the ledger's deferred key needs them).
Reads go through an engine with the :data:`READ_ONLY` option, whose transactions are
plain ``BEGIN``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from riverbed.sql import sqlite_url as sqlite_url  # re-exported: tests use it

#: execution option of the read-only engine: SQLite begins its transactions deferred
READ_ONLY = "payments_read_only"


def create_engine(
    url: str, *, schema: str | None = None, connect_args: Mapping[str, Any] | None = None
) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets WAL, a busy timeout, foreign keys, its directory.

    ``schema`` (PostgreSQL): the schema the tables live in (the connection's search_path).
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
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers don't block the writer
        cursor.execute("PRAGMA busy_timeout=10000")  # ms to wait for the write lock
        cursor.execute("PRAGMA foreign_keys=ON")  # the ledger's deferred key needs them
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def upsert(dialect: str, table: Any) -> Any:
    """INSERT … ON CONFLICT for this dialect (both support it the same way)."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"database {dialect!r} is not supported (SQLite, PostgreSQL)")


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` for reads: on SQLite its transactions do not take the write lock."""
    return engine.execution_options(**{READ_ONLY: True})
