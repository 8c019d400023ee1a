"""The payments database engine: SQLite or PostgreSQL over SQLAlchemy 2 (async), the
runtime's :func:`riverbed.sql.create_engine` with what the ledger needs of SQLite.

SQLite: every write transaction starts with ``BEGIN IMMEDIATE`` (it takes the write
lock at once, so two writers queue on the busy timeout instead of one failing when it
upgrades a read lock), and foreign keys are on (the ledger's deferred key needs them).
Reads go through :func:`riverbed.sql.read_only` engines, whose transactions are plain
``BEGIN``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from riverbed import sql
from riverbed.sql import sqlite_url as sqlite_url  # re-exported: tests use it


def create_engine(
    url: str, *, schema: str | None = None, connect_args: Mapping[str, Any] | None = None
) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets WAL, a 10 s busy timeout, foreign keys,
    immediate write transactions and its directory.

    ``schema`` (PostgreSQL): the schema the tables live in (the connection's search_path).
    """
    return sql.create_engine(
        url,
        schema=schema,
        connect_args=connect_args,
        busy_timeout_ms=10_000,
        foreign_keys=True,
        immediate_writes=True,
    )
