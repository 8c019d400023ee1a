"""``riverbed-email``: the bare command runs the service; ``suppressions`` edits the list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from riverbed.testing import sync_redis_client
from riverbed_email import cli, keys

pytestmark = pytest.mark.integration


@pytest.fixture
def address(redis_url: str, unique: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An address unique to the test; the CLI talks to the test Redis."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    value = f"cli-{unique}@example.com"
    yield value
    client = sync_redis_client(redis_url)
    client.hdel(keys.email_suppression_key(), value)
    client.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_an_operator_adds_lists_and_removes_a_suppression(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "suppressions", "add", address.upper(), "--reason", "complaint")
    assert (code, out.strip()) == (0, f"{address} suppressed")

    code, out, err = run(capsys, "suppressions", "list")
    assert code == 0
    [line] = [line for line in out.splitlines() if line.startswith(address)]
    listed_address, when, smtp_code, reason = line.split("\t")
    assert (listed_address, smtp_code, reason) == (address, "-", "complaint")
    assert when.endswith("+00:00")
    assert "suppressed address(es)" in err

    code, out, _ = run(capsys, "suppressions", "remove", address)
    assert (code, out.strip()) == (0, f"{address} removed from the suppression list")
    _, out, _ = run(capsys, "suppressions", "list")
    assert address not in out


def test_removing_an_address_that_is_not_suppressed_fails_and_says_so(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "suppressions", "remove", address)
    assert code == 1
    assert f"{address} is not on the suppression list" in err


def test_list_json_gives_one_object_per_address(
    address: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = sync_redis_client(redis_url)
    client.hset(
        keys.email_suppression_key(),
        address,
        json.dumps({"reason": "550 5.1.1 no such user", "smtp_code": 550, "event_id": "e1"}),
    )
    client.close()
    code, out, _ = run(capsys, "suppressions", "list", "--json")
    assert code == 0
    entries = [json.loads(line) for line in out.splitlines()]
    [mine] = [e for e in entries if e["address"] == address]
    assert (mine["smtp_code"], mine["event_id"], mine["reason"]) == (
        550,
        "e1",
        "550 5.1.1 no such user",
    )


def test_a_value_that_is_no_address_is_refused(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "suppressions", "remove", "not-an-address")
    assert code == 2
    assert "is not an email address" in err


def test_the_bare_command_runs_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[Any] = []

    class FakeService:
        def run(self) -> None:
            ran.append(True)

    monkeypatch.setattr(cli, "create_service", lambda settings: FakeService())
    assert cli.main([]) == 0
    assert ran == [True]


def test_the_console_script_is_installed_and_reaches_redis(address: str, redis_url: str) -> None:
    script = os.path.join(os.path.dirname(sys.executable), "riverbed-email")
    done = subprocess.run(
        [script, "suppressions", "add", address],
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{address} suppressed"
