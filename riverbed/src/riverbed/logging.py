"""Logging, configured once per process: structlog for our code, the same output for stdlib.

Every line is one JSON object on stdout (or a readable console line when stdout is a
terminal) with an ISO-8601 UTC ``timestamp``, ``level``, ``logger``, ``event``, the
``service`` name, whatever :mod:`structlog.contextvars` holds (see
:func:`bind_message_context`) and, for errors, the formatted ``exception``.

Our own lines go from structlog straight to stdout, without a stdlib ``LogRecord``
(measured: 25 µs a line through the stdlib, about a quarter of what the gateway spent
on a request). Records from stdlib loggers (uvicorn, redis, asyncio…) pass through the
same processors via :class:`structlog.stdlib.ProcessorFormatter`, so they are JSON too
and are redacted the same way. Run uvicorn with ``log_config=None`` so it keeps this setup.

Secrets never reach the output: values under keys that look secret are replaced by
``[redacted]``, as are credentials embedded in URLs, ``Bearer`` tokens and secret-looking
query parameters inside any logged string (including tracebacks).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, Final, Literal

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from riverbed.log_context import bind_message_context, merge_message_context

__all__ = [
    "REDACTED",
    "bind_message_context",
    "configure_logging",
    "get_logger",
    "redact_secrets",
]

REDACTED: Final = "[redacted]"

LogFormat = Literal["auto", "json", "console"]
_FORMATS: Final = ("auto", "json", "console")

# Key names whose values are secrets, matched case-insensitively anywhere in the key,
# so `smtp_password`, `X-Api-Key`, `access_token` and `Set-Cookie` are all covered.
_SECRET_KEY = re.compile(
    r"pass(?:word|wd)|secret|token|api[_-]?key|authori[sz]ation|cookie|signature|credential",
    re.IGNORECASE,
)
# `scheme://user:password@host` and `scheme://:password@host` → keep user and host.
_URL_CREDENTIALS = re.compile(r"(?P<prefix>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)[^@/\s]+(?=@)", re.I)
# `Authorization: Bearer abc…` in free text. The token must hold a digit or symbol and be
# 8+ characters, so prose such as "basic settings" is left alone.
_BEARER = re.compile(
    r"(?P<prefix>\b(?:bearer|basic)\s+)(?=[A-Za-z]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{8,}",
    re.IGNORECASE,
)
# `?token=abc&…` / `api_key=…` in query strings and free text.
_SECRET_PARAM = re.compile(
    r"(?P<prefix>\b[\w-]*(?:pass(?:word|wd)|secret|token|api[_-]?key|signature)[\w-]*=)[^&\s\"']+",
    re.IGNORECASE,
)
# Nested structures (headers, payloads) are walked this deep; deeper values are kept as
# they are rather than cost time on every line.
_MAX_DEPTH: Final = 4

# The marker that lets a second `configure_logging` find and replace our handler.
_HANDLER_NAME: Final = "riverbed"
# stdlib loggers that install their own handlers; we route them through ours instead.
_ADOPTED_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access", "faststream")


def _redact_text(text: str) -> str:
    # Cheap pre-checks: most log strings contain none of the markers.
    if "://" in text:
        text = _URL_CREDENTIALS.sub(rf"\g<prefix>{REDACTED}", text)
    if "=" in text:
        text = _SECRET_PARAM.sub(rf"\g<prefix>{REDACTED}", text)
    if " " in text:
        text = _BEARER.sub(rf"\g<prefix>{REDACTED}", text)
    return text


#: key name -> whether it names a secret; log lines repeat the same few dozen keys
_SECRET_KEY_SEEN: dict[str, bool] = {}
_SECRET_KEY_SEEN_MAX: Final = 4096  # names remembered; cleared when full (bounded memory)


def _is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    secret = _SECRET_KEY_SEEN.get(key)
    if secret is None:
        if len(_SECRET_KEY_SEEN) >= _SECRET_KEY_SEEN_MAX:
            _SECRET_KEY_SEEN.clear()
        secret = _SECRET_KEY_SEEN[key] = _SECRET_KEY.search(key) is not None
    return secret


def _redact_value(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _redact_text(value)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {k: _redact_item(k, v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v, depth + 1) for v in value]
    return value


def _redact_item(key: object, value: Any, depth: int) -> Any:
    # A flag such as `signature_valid=False` or an absent `token=None` holds no secret.
    if _is_secret_key(key) and value is not None and not isinstance(value, bool):
        return REDACTED
    return _redact_value(value, depth)


_PLAIN_TYPES: Final = (int, float, type(None))  # hold no secret text (bool is an int)


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: replace secret values (by key name, and inside strings) with ``[redacted]``."""
    for key, value in event_dict.items():
        if key.startswith("_"):  # structlog's own bookkeeping (`_record`, `_from_structlog`)
            continue
        # _redact_item's rules, with the common cases (short strings, numbers) inline:
        # this runs for every field of every line
        if _is_secret_key(key):
            if value is not None and not isinstance(value, bool):
                event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = _redact_text(value)
        elif not isinstance(value, _PLAIN_TYPES):
            event_dict[key] = _redact_value(value, 0)
    return event_dict


class _Output:
    """What :func:`configure_logging` chose, read by the processors on every line, so
    loggers that structlog cached before a reconfiguration follow the new choice too."""

    level: int = logging.INFO
    service: str | None = None
    render: Processor = structlog.processors.JSONRenderer()


_OUTPUT = _Output()

#: structlog method name -> stdlib level number
_METHOD_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


def _drop_below_level(_logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    if _METHOD_LEVELS.get(method, logging.INFO) < _OUTPUT.level:
        raise structlog.DropEvent
    return event_dict


def _add_logger_name(logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    event_dict["logger"] = getattr(logger, "name", "root")
    return event_dict


def _drop_color_message(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    # uvicorn passes a copy of its message with terminal colour codes as an "extra"
    event_dict.pop("color_message", None)
    return event_dict


def _add_service(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    if _OUTPUT.service is not None:
        event_dict.setdefault("service", _OUTPUT.service)
    return event_dict


def _render(logger: WrappedLogger, method: str, event_dict: EventDict) -> Any:
    return _OUTPUT.render(logger, method, event_dict)


class _StdoutLogger:
    """structlog's output: each rendered line to whatever ``sys.stdout`` is at that moment
    (pytest's capture or a redirecting supervisor may swap it), flushed at once."""

    __slots__ = ("name",)

    def __init__(self, name: str | None = None) -> None:
        self.name = name or "root"

    def write_line(self, line: str) -> None:
        stream = sys.stdout
        stream.write(line + "\n")
        stream.flush()

    # structlog calls the method named like the level; every level writes the same way
    debug = info = msg = warning = warn = error = exception = critical = fatal = write_line


class _StdoutHandler(logging.Handler):
    """Writes to whatever ``sys.stdout`` is at emit time.

    Resolving the stream late keeps working when stdout is swapped (pytest's capture,
    a redirecting supervisor) instead of writing to a closed file.
    """

    terminator = "\n"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stdout
            stream.write(self.format(record) + self.terminator)
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def _resolve_level(level: str) -> int:
    levels = logging.getLevelNamesMapping()
    name = level.strip().upper()
    if name not in levels or name == "NOTSET":
        accepted = ", ".join(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
        raise ValueError(f"log level {level!r} is not known; use one of {accepted}")
    return levels[name]


def _use_console(fmt: str) -> bool:
    if fmt not in _FORMATS:
        raise ValueError(f"log format {fmt!r} is not known; use one of {', '.join(_FORMATS)}")
    if fmt == "auto":
        isatty = getattr(sys.stdout, "isatty", None)
        return bool(isatty and isatty())
    return fmt == "console"


def configure_logging(level: str = "INFO", fmt: str = "auto", service: str | None = None) -> None:
    """Configure structlog and stdlib logging for this process; safe to call again.

    ``fmt`` is ``json`` (one JSON object per line), ``console`` (human-readable), or
    ``auto`` (console when stdout is a terminal, else JSON). A second call replaces the
    first one's handler rather than adding another, so nothing is logged twice.
    """
    numeric_level = _resolve_level(level)
    console = _use_console(fmt)
    _OUTPUT.level = numeric_level
    _OUTPUT.service = service
    _OUTPUT.render = (
        structlog.dev.ConsoleRenderer(colors=True)
        if console
        else structlog.processors.JSONRenderer()
    )

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    # the end of both chains: service, stack, exception text, then redaction of it all
    finishing: list[Processor] = [
        _add_service,
        structlog.processors.StackInfoRenderer(),
        # Formatted to text before redaction, so a URL in a traceback is masked too.
        structlog.processors.format_exc_info,
        redact_secrets,
        _render,
    ]
    _route_stdlib_records(numeric_level, timestamper, finishing)

    # our own lines: straight to stdout. The chain reads level, service and format from
    # _OUTPUT, so loggers cached by an earlier call stay correct after a reconfiguration.
    structlog.configure(
        processors=[
            _drop_below_level,
            structlog.contextvars.merge_contextvars,
            merge_message_context,
            structlog.processors.add_log_level,
            _add_logger_name,
            timestamper,
            *finishing,
        ],
        logger_factory=_StdoutLogger,
        # level filtering is _drop_below_level's (it can change); positional arguments
        # (`log.info("%s sent", n)`) are formatted by this class
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        cache_logger_on_first_use=True,
    )


def _route_stdlib_records(
    numeric_level: int, timestamper: Processor, finishing: list[Processor]
) -> None:
    """Send stdlib records (uvicorn, redis, asyncio…) through one handler on the root
    logger, formatted by the same chain as our own lines; replaces an earlier call's."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            merge_message_context,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            _drop_color_message,
            timestamper,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finishing],
    )
    handler = _StdoutHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
            existing.close()
    root.addHandler(handler)
    root.setLevel(numeric_level)

    for name in _ADOPTED_LOGGERS:
        adopted = logging.getLogger(name)
        adopted.handlers.clear()
        adopted.propagate = True


def get_logger(name: str | None = None) -> FilteringBoundLogger:
    """A structlog logger named ``name`` (default: the caller's module)."""
    if name is None:
        name = sys._getframe(1).f_globals.get("__name__", "root")
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger
