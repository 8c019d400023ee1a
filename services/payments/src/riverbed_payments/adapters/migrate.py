"""Bring the database to the latest schema with the service's Alembic migrations.

Run at start-up (``WEBHOOKS_MIGRATE_ON_START=true``, the default) or by an
operator (``riverbed-payments migrate``) before a rollout that turns start-up
migrations off. On PostgreSQL an advisory lock serialises replicas that start
together; SQLite's write lock does the same for a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

MIGRATIONS: Final = Path(__file__).with_name("migrations")
#: pg_advisory_xact_lock key of the payments migrations (any constant unique to them)
_LOCK_KEY: Final = 0x5041_594D  # "PAYM"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def _upgrade(connection: Connection) -> str | None:
    before = MigrationContext.configure(connection).get_current_revision()
    command.upgrade(_config(connection), "head")
    after = MigrationContext.configure(connection).get_current_revision()
    if before != after:
        log.info("database migrated", revision_before=before, revision=after)
    return after


async def upgrade(engine: AsyncEngine) -> str | None:
    """Apply every migration not yet applied; returns the revision the database is at."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        return await conn.run_sync(_upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
