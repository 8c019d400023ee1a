"""The webhooks database's Alembic migrations (``migrations/``), as a
:class:`riverbed.sql.Migrations`: applied at start-up unless
``WEBHOOKS_MIGRATE_ON_START=false``, else by ``riverbed-webhooks migrate``."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from riverbed.sql import Migrations

MIGRATIONS: Final = Migrations(
    Path(__file__).with_name("migrations"),
    lock_key=0x5742_484B,  # "WBHK": any constant no other service's migrations lock
    service="webhooks",
)
