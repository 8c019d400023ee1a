"""Alembic migrations of the webhooks database, run by :mod:`..migrate`."""
