"""One INFO line a request, without structlog's machinery: :func:`info` writes what
``get_logger(name).info(event, **fields)`` writes under :func:`riverbed.logging.configure_logging`
(the same fields in the same order, the same redaction, the same JSON), for lines written
so often that structlog's own cost shows (the gateway's access log: ~15 µs a line through
the bound logger and its processors, ~6 µs here, of ~250 µs a request).

It runs the JSON chain's steps itself, in the chain's order; with the console format (or
before logging is configured) it hands the line to structlog, which renders it as usual.
``tests/test_hot_log.py`` holds the two paths to the same output.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from structlog.contextvars import merge_contextvars
from structlog.processors import JSONRenderer

from riverbed.log_context import merge_message_context
from riverbed.logging import _OUTPUT, _StdoutLogger, redact_secrets

__all__ = ["info"]

#: JSONRenderer's serializer as it calls it (json.dumps with structlog's fallback for
#: objects JSON has no type for), made once: json.dumps(..., default=...) makes an encoder
#: a call
_ENCODER: Final = json.JSONEncoder(default=structlog.processors._json_fallback_handler)
#: structlog's output for our lines (stdout as it is at each write, flushed at once)
_WRITER: Final = _StdoutLogger()


def info(logger_name: str, event: str, fields: dict[str, Any]) -> None:
    """Log ``event`` at INFO from the logger ``logger_name`` with ``fields`` (which it
    takes over: the caller passes a fresh dict)."""
    if _OUTPUT.level > logging.INFO:
        return
    if type(_OUTPUT.render) is not JSONRenderer or "exc_info" in fields or "stack_info" in fields:
        # the console's colours, a traceback or a stack to format: structlog's own way
        structlog.get_logger(logger_name).info(event, **fields)
        return
    # the steps of configure_logging's chain for a line of ours, in order
    fields["event"] = event
    merge_contextvars(None, "info", fields)
    merge_message_context(None, "info", fields)
    fields["level"] = "info"
    fields["logger"] = logger_name
    fields["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    if _OUTPUT.service is not None:
        fields.setdefault("service", _OUTPUT.service)
    redact_secrets(None, "info", fields)
    _WRITER.write_line(_ENCODER.encode(fields))
