"""Scratch databases for the tests of services that own one (``riverbed[sql]``).

An SQLite file, or a PostgreSQL schema of the test's own that is dropped afterwards.
pytest is imported only to skip a test when PostgreSQL is not reachable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ScratchDatabase:
    """An empty database of one test: an SQLite file, or a PostgreSQL schema of its own."""

    url: str
    schema: str | None = None

    @property
    def dialect(self) -> str:
        return "sqlite" if self.url.startswith("sqlite") else "postgresql"


async def postgres_unreachable(url: str) -> str | None:
    """None when PostgreSQL answers at ``url`` (a postgresql+asyncpg URL), else why not."""
    import asyncpg  # type: ignore[import-untyped]  # a dependency of database services only

    try:
        connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        return f"{type(error).__name__}: {error}"
    await connection.close()
    return None


@asynccontextmanager
async def scratch_database(
    kind: str, *, sqlite_file: Path, postgres_url: str, schema: str, url_setting: str
) -> AsyncIterator[ScratchDatabase]:
    """``kind`` "sqlite" or "postgresql"; the PostgreSQL schema is dropped afterwards.

    Skips (printing why) when PostgreSQL is not reachable; ``url_setting`` names the
    variable that points the tests at another PostgreSQL.
    """
    if kind == "sqlite":
        yield ScratchDatabase(f"sqlite+aiosqlite:///{sqlite_file}")
        return
    import asyncpg

    why = await postgres_unreachable(postgres_url)
    if why is not None:
        import pytest  # only here: importing riverbed.testing must not need pytest

        print(f"PostgreSQL not reachable at {postgres_url}: {why}")
        pytest.skip(f"PostgreSQL not reachable at {postgres_url} ({why}); set {url_setting}")
    connection = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    await connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield ScratchDatabase(postgres_url, schema)
    finally:
        await connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await connection.close()


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")
