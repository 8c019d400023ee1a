"""The command line: ``migrate`` brings the database to the code's revision and exits 0;
``python -m riverbed_webhooks`` is the same command line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from riverbed_webhooks.adapters import migrate
from riverbed_webhooks.adapters.sql import create_engine, sqlite_url
from riverbed_webhooks.cli import main


def test_migrate_brings_the_database_to_the_head_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sqlite_url(tmp_path / "webhooks.db")
    monkeypatch.setenv("WEBHOOKS_DATABASE_URL", url)
    assert main(["migrate"]) == 0
    head = migrate.MIGRATIONS.head_revision()
    assert f"webhooks database at revision {head}" in capsys.readouterr().out

    async def revision() -> str | None:
        engine = create_engine(url)
        try:
            return await migrate.MIGRATIONS.current_revision(engine)
        finally:
            await engine.dispose()

    assert asyncio.run(revision()) == head


def test_the_module_runs_the_same_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "riverbed_webhooks", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "migrate" in done.stdout
    assert "serve" in done.stdout
