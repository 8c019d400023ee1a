"""The ``riverbed-payments`` command line: its admin commands and their exit statuses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from riverbed_payments.adapters import migrate
from riverbed_payments.adapters.database import create_engine, sqlite_url
from riverbed_payments.cli import USAGE, main


async def test_migrate_brings_the_database_to_the_head_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sqlite_url(tmp_path / "payments.db")
    monkeypatch.setenv("PAYMENTS_DATABASE_URL", url)
    # in a thread: the command runs an event loop of its own
    assert await asyncio.to_thread(main, ["migrate"]) == 0
    head = migrate.MIGRATIONS.head_revision()
    said = capsys.readouterr().out.strip().splitlines()[-1]  # after the log lines
    assert said == f"payments database at revision {head}"
    engine = create_engine(url)
    try:
        assert await migrate.MIGRATIONS.current_revision(engine) == head
    finally:
        await engine.dispose()


def test_reconcile_refuses_a_file_that_is_not_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reconcile", str(tmp_path / "missing.csv")]) == USAGE
    assert "is not a file" in capsys.readouterr().err
