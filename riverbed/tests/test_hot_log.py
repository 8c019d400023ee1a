"""riverbed.hot_log writes the line structlog would write: same fields, order, redaction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from riverbed import hot_log
from riverbed.logging import REDACTED, bind_message_context, configure_logging, get_logger


@pytest.fixture(autouse=True)
def _restore_logging(restored_logging: None) -> Iterator[None]:
    yield
    configure_logging("INFO", "json")  # hot_log follows the last configuration


def _fields() -> dict[str, Any]:
    return {
        "method": "POST",
        "path": "/v1/events",
        "status": 202,
        "duration_ms": 1.25,
        "request_id": "see https://user:hunter22@example.com/x",  # a URL's password
        "api_key": "rbk_secret",  # a secret by its name
        "flag": None,
    }


def _both_lines(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    capsys.readouterr()
    get_logger("riverbed_gateway.access").info("request", **_fields())
    hot_log.info("riverbed_gateway.access", "request", _fields())
    first, second = capsys.readouterr().out.splitlines()
    return first, second


def _without_timestamp(line: str) -> tuple[list[str], dict[str, Any]]:
    document = json.loads(line)
    assert document.pop("timestamp").endswith("Z")
    return list(json.loads(line)), document


def test_the_same_line_as_structlog(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json", service="gateway")
    structlog.contextvars.bind_contextvars(tenant="acme")
    with bind_message_context(
        event_id="e1", event_type="t.v1", stream="s", entry_id="1-0", attempt=1
    ):
        by_structlog, by_hot_log = _both_lines(capsys)
    (order, expected), (hot_order, got) = map(_without_timestamp, (by_structlog, by_hot_log))
    assert got == expected
    assert hot_order == order  # the same keys in the same order
    assert got["api_key"] == REDACTED
    assert "hunter22" not in by_hot_log
    assert (got["service"], got["tenant"], got["entry_id"]) == ("gateway", "acme", "1-0")
    # the same separators and escaping: only the timestamps differ
    assert by_hot_log.replace(json.loads(by_hot_log)["timestamp"], "") == by_structlog.replace(
        json.loads(by_structlog)["timestamp"], ""
    )


def test_below_the_level_nothing_is_written(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING", "json")
    capsys.readouterr()
    hot_log.info("riverbed_gateway.access", "request", _fields())
    assert capsys.readouterr().out == ""


def test_the_console_format_goes_through_structlog(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "console")
    _by_structlog, by_hot_log = _both_lines(capsys)
    with pytest.raises(json.JSONDecodeError):
        json.loads(by_hot_log)
    assert "request" in by_hot_log
    assert "/v1/events" in by_hot_log
    assert REDACTED in by_hot_log
    assert "rbk_secret" not in by_hot_log
