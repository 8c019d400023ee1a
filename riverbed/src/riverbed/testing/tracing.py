"""Traces in tests: :func:`recorded_spans` turns tracing on with the SDK's in-memory exporter,
and turns it off again afterwards, so that the next test in the same process is untraced.

Needs the ``tracing`` extra of ``riverbed`` (the OpenTelemetry SDK), as every service has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from riverbed.tracing import configure_tracing, shutdown_tracing, tracing_enabled


@contextlib.contextmanager
def recorded_spans(service_name: str = "riverbed-tests") -> Iterator[InMemorySpanExporter]:
    """Tracing on for the block, every span exported to the yielded exporter as it ends
    (``get_finished_spans()``). The OTEL_* variables of the test's environment are ignored."""
    if tracing_enabled():
        raise RuntimeError("tracing is already on in this process: one recorder at a time")
    exporter = InMemorySpanExporter()
    configure_tracing(service_name, exporter=exporter, environ={})
    try:
        yield exporter
    finally:
        shutdown_tracing()
        _forget_global_provider()


def _forget_global_provider() -> None:
    # OpenTelemetry lets a process set its global tracer provider once; a test process
    # runs many services one after another, so it is reset the way OpenTelemetry's own
    # tests do it (opentelemetry-test-utils' reset_trace_globals)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


def span_named(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    """The one span called ``name``; an AssertionError listing what there is otherwise."""
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name!r} among {[s.name for s in spans]}"
    return found[0]
