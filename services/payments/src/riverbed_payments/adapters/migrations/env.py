"""Alembic environment: runs on the connection that :func:`..migrate.upgrade` hands over.

There is no alembic.ini: migrations run from the service (at start-up or with
``riverbed-payments migrate``), which passes an open connection in
``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

from riverbed_payments.adapters.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run the payments migrations with `riverbed-payments migrate` (or at start-up with "
        "PAYMENTS_MIGRATE_ON_START=true), not with the alembic command"
    )
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
)
with context.begin_transaction():
    context.run_migrations()
