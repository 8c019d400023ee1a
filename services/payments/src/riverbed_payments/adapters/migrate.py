"""Bring the database to the latest schema with the service's Alembic migrations.

Run at start-up (``WEBHOOKS_MIGRATE_ON_START=true``, the default) or by an
operator (``riverbed-payments migrate``) before a rollout that turns start-up
migrations off. On PostgreSQL an advisory lock serialises replicas that start
together; SQLite's write lock does the same for a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from riverbed.sql import Migrations

#: the advisory-lock key is any constant unique to this service's migrations
MIGRATIONS: Final = Migrations(
    Path(__file__).with_name("migrations"),
    lock_key=0x5041_594D,  # "PAYM"
)

head_revision = MIGRATIONS.head_revision
upgrade = MIGRATIONS.upgrade
current_revision = MIGRATIONS.current_revision
