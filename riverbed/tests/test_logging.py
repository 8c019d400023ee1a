"""Logging: JSON lines on stdout, stdlib routed through the same formatter, secrets redacted."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta
from typing import Any

import pytest

from riverbed.logging import REDACTED, bind_message_context, configure_logging, get_logger

pytestmark = pytest.mark.usefixtures("restored_logging")


def json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_each_line_is_json_with_utc_timestamp_level_logger_and_service(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(fmt="json", service="email")

    get_logger("riverbed.test").info("email sent", to="ada@example.com")

    [line] = json_lines(capsys)
    assert line["event"] == "email sent"
    assert line["to"] == "ada@example.com"
    assert line["level"] == "info"
    assert line["logger"] == "riverbed.test"
    assert line["service"] == "email"
    assert datetime.fromisoformat(line["timestamp"]).utcoffset() == timedelta(0)


def test_password_in_a_url_is_redacted_but_user_and_host_are_kept(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(fmt="json")

    get_logger("t").info(
        "connecting to redis://app:hunter2@redis.internal:6379/0",
        redis_url="rediss://:hunter2@cache:6380",
    )

    [line] = json_lines(capsys)
    assert "hunter2" not in json.dumps(line)
    assert line["event"] == f"connecting to redis://app:{REDACTED}@redis.internal:6379/0"
    assert line["redis_url"] == f"rediss://:{REDACTED}@cache:6380"


def test_values_of_secret_looking_keys_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(fmt="json")

    get_logger("t").info(
        "request",
        token="tok-123",
        api_key="k-456",
        smtp_password="pw",
        headers={"Authorization": "Bearer abc.def.ghi", "X-Request-Id": "r-1"},
        signature_valid=False,
        token_ttl=None,
    )

    [line] = json_lines(capsys)
    assert line["token"] == REDACTED
    assert line["api_key"] == REDACTED
    assert line["smtp_password"] == REDACTED
    assert line["headers"] == {"Authorization": REDACTED, "X-Request-Id": "r-1"}
    # Flags and absent values carry no secret and stay readable.
    assert line["signature_valid"] is False
    assert line["token_ttl"] is None


def test_secrets_inside_free_text_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(fmt="json")

    get_logger("t").info(
        "GET /hook?token=abc123&page=2 with Authorization: Bearer eyJhbGciOi.x.y; basic settings"
    )

    [line] = json_lines(capsys)
    assert line["event"] == (
        f"GET /hook?token={REDACTED}&page=2 with Authorization: Bearer {REDACTED}; basic settings"
    )


def test_stdlib_records_use_the_same_format_and_redaction(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(fmt="json", service="gateway")

    logging.getLogger("uvicorn.error").warning(
        "cannot reach %s",
        "redis://u:pw9@h:1/0",
        extra={"color_message": "cannot reach \x1b[36m%s\x1b[0m"},  # as uvicorn logs
    )

    [line] = json_lines(capsys)
    assert line["event"] == f"cannot reach redis://u:{REDACTED}@h:1/0"
    assert line["level"] == "warning"
    assert line["logger"] == "uvicorn.error"
    assert line["service"] == "gateway"
    assert "timestamp" in line
    assert "color_message" not in line, "terminal colour codes stay out of JSON lines"


def test_exception_is_formatted_and_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(fmt="json")

    try:
        raise ConnectionError("redis://app:hunter2@redis:6379 refused")
    except ConnectionError:
        get_logger("t").exception("publish failed")

    [line] = json_lines(capsys)
    assert "Traceback" in line["exception"]
    assert "ConnectionError" in line["exception"]
    assert "hunter2" not in line["exception"]


def test_bound_message_context_appears_on_lines_inside_the_block_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(fmt="json")
    log = get_logger("t")

    with bind_message_context(
        event_id="ev-1",
        event_type="email.requested.v1",
        stream="rb:{email.requested}:stream",
        entry_id="1-0",
        attempt=2,
        correlation_id="corr-9",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    ):
        log.info("handling")
        logging.getLogger("smtp").info("stdlib line inside the block")
    log.info("after")

    inside, stdlib_inside, after = json_lines(capsys)
    expected = {
        "event_id": "ev-1",
        "event_type": "email.requested.v1",
        "stream": "rb:{email.requested}:stream",
        "entry_id": "1-0",
        "attempt": 2,
        "correlation_id": "corr-9",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    assert expected.items() <= inside.items()
    assert expected.items() <= stdlib_inside.items()
    assert not expected.keys() & after.keys()


def test_unknown_identity_of_an_undecodable_entry_is_left_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(fmt="json")

    with bind_message_context(
        event_id=None, event_type=None, stream="s", entry_id="7-0", attempt=1
    ):
        get_logger("t").warning("undecodable entry")

    [line] = json_lines(capsys)
    assert line["entry_id"] == "7-0"
    assert not {"event_id", "event_type", "correlation_id"} & line.keys()


async def test_concurrent_handlers_each_log_their_own_message_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(fmt="json")
    log = get_logger("t")
    both_bound = asyncio.Barrier(2)

    async def handle(event_id: str) -> None:
        with bind_message_context(
            event_id=event_id, event_type="x.v1", stream="s", entry_id="1-0", attempt=1
        ):
            await both_bound.wait()
            log.info("handled")

    await asyncio.gather(handle("a"), handle("b"))

    lines = json_lines(capsys)
    assert sorted(line["event_id"] for line in lines) == ["a", "b"]
    assert all("correlation_id" not in line for line in lines)


def test_configuring_twice_writes_each_line_once(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(fmt="json", service="first")
    configure_logging(fmt="json", service="second")

    get_logger("t").info("once")
    logging.getLogger("lib").warning("once too")

    lines = json_lines(capsys)
    assert [line["event"] for line in lines] == ["once", "once too"]
    assert {line["service"] for line in lines} == {"second"}
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "riverbed"]
    assert len(ours) == 1


def test_level_filters_both_structlog_and_stdlib(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="warning", fmt="json")

    get_logger("t").info("hidden")
    logging.getLogger("lib").info("hidden too")
    get_logger("t").warning("shown")

    assert [line["event"] for line in json_lines(capsys)] == ["shown"]


def test_auto_format_writes_json_when_stdout_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(fmt="auto")

    get_logger("t").info("piped")

    assert json_lines(capsys)[0]["event"] == "piped"


def test_console_format_is_human_readable_and_still_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(fmt="console")

    get_logger("t").info("dev line", password="pw-secret")

    out = capsys.readouterr().out
    assert "dev line" in out
    assert "pw-secret" not in out
    assert REDACTED in out


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": "LOUD"}, "log level 'LOUD' is not known; use one of DEBUG, INFO"),
        ({"fmt": "xml"}, "log format 'xml' is not known; use one of auto, json, console"),
    ],
)
def test_unknown_level_or_format_is_rejected_naming_what_is_accepted(
    kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        configure_logging(**kwargs)


def test_a_logger_used_before_a_reconfiguration_follows_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(level="info", fmt="json", service="first")
    log = get_logger("t")
    log.info("%s sent", 3)  # structlog caches the logger on first use
    configure_logging(level="error", fmt="json", service="second")
    log.warning("hidden now")
    log.error("shown", token="s3cret-value")

    lines = json_lines(capsys)
    assert [(line["event"], line["service"]) for line in lines] == [
        ("3 sent", "first"),
        ("shown", "second"),
    ]
    assert lines[1]["token"] == REDACTED
