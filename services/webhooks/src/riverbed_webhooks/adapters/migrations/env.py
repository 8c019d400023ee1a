"""Alembic environment: runs on the connection that :func:`..migrate.upgrade` hands over."""

from __future__ import annotations

from riverbed.sql import run_migrations_in_env
from riverbed_webhooks.adapters.tables import metadata

run_migrations_in_env(metadata, service="webhooks")
