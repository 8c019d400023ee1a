"""OpenTelemetry traces: from the gateway's HTTP request, through every stream, to the effects.

Configured once per process from the standard OpenTelemetry variables by
:func:`configure_tracing` (``Service.run`` calls it). Exporting is **off** unless
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; off, no SDK
tracer provider is installed, nothing is instrumented, and every helper here returns at its
first line (the spans the OpenTelemetry API would make are no-ops anyway). On, spans go to
that endpoint over OTLP/HTTP in batches (``OTEL_BSP_*``), with ``service.name`` from
``OTEL_SERVICE_NAME`` or else the service's own name, and Redis commands become spans too
(the OpenTelemetry Redis instrumentation).

The trace travels in each event as the CloudEvents distributed-tracing extension
(``traceparent``, ``tracestate``; docs/wire-format.md): :class:`TracedRequests` makes the
gateway's request span, :func:`stamp` puts the current span's context into every event a
:class:`~riverbed.publisher.Publisher` appends, :func:`consumer_span` continues it per
message, and :func:`client_span` makes the effects (an SMTP send, a webhook call, a ledger
transaction) its children.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import structlog
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from riverbed.errors import RiverbedError
from riverbed_contracts import CloudEvent

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)

#: the instrumentation scope of every span the runtime and the services make
SCOPE: Final = "riverbed"
#: W3C Trace Context, the wire form of the gateway's header and of the events' attributes
#: (not the configurable global propagator: the contract is traceparent/tracestate)
_W3C: Final = TraceContextTextMapPropagator()
#: what a helper yields while tracing is off: a span that records nothing, entered for free
_NO_SPAN: Final = contextlib.nullcontext(trace.INVALID_SPAN)


class TracingConfigurationError(RiverbedError, ValueError):
    """An OpenTelemetry variable this runtime cannot honour."""


class _Tracing:
    """What :func:`configure_tracing` installed; ``provider`` None means off."""

    provider: TracerProvider | None = None
    tracer: Tracer = trace.NoOpTracer()


_state = _Tracing()


def tracing_enabled() -> bool:
    """Whether this process records and exports spans."""
    return _state.provider is not None


def tracer() -> Tracer:
    """The runtime's tracer: the configured provider's, else the API's no-op one."""
    return _state.tracer


def exporting_requested(environ: Mapping[str, str]) -> bool:
    """Whether the standard variables ask for spans to be exported (see the module doc)."""
    if _flag(environ, "OTEL_SDK_DISABLED"):
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if exporter not in ("otlp", "none"):
        raise TracingConfigurationError(
            f"OTEL_TRACES_EXPORTER={exporter!r} is not supported: Riverbed exports traces "
            "with 'otlp' (OTLP over HTTP, the default) or not at all with 'none'"
        )
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if exporter == "none" or not (endpoint or "").strip():
        return False
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(name, "").strip()
        if protocol and protocol != "http/protobuf":
            raise TracingConfigurationError(
                f"{name}={protocol!r} is not supported: Riverbed exports OTLP over HTTP "
                "('http/protobuf', the default); point it at the collector's HTTP port (4318)"
            )
    return True


def configure_tracing(
    service_name: str,
    *,
    exporter: SpanExporter | None = None,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Install the SDK's tracer provider when the environment asks for exporting (or an
    ``exporter`` is given: tests pass an in-memory one, whose spans are then exported as
    each ends); returns whether tracing is on. Off, nothing is installed. Once per process:
    a second call while on changes nothing."""
    environ = os.environ if environ is None else environ
    if _state.provider is not None:
        return True
    if exporter is None and not exporting_requested(environ):
        return False
    # the SDK is the `tracing` extra of the riverbed package: imported only when on
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    name = environ.get("OTEL_SERVICE_NAME", "").strip() or service_name
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: name}), sampler=_untraced_calls_dropped()
    )
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    RedisInstrumentor().instrument(tracer_provider=provider)
    _state.provider = provider
    _state.tracer = provider.get_tracer(SCOPE)
    exporting_to = type(exporter).__name__ if exporter is not None else "OTLP/HTTP"
    log.info("exporting traces", service_name=name, exporter=exporting_to)
    return True


def shutdown_tracing() -> None:
    """Export what is buffered, stop instrumenting Redis, and forget the provider (the
    API's global stays set: OpenTelemetry sets it once per process)."""
    provider = _state.provider
    if provider is None:
        return
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor().uninstrument()
    provider.shutdown()
    _state.provider = None
    _state.tracer = trace.NoOpTracer()


def _untraced_calls_dropped() -> Any:
    """The sampler: ``OTEL_TRACES_SAMPLER`` (parent-based, always on, by default), except
    that a CLIENT span with no parent is dropped. Redis calls outside any request or message
    (the consumers' blocking reads, acknowledgements, chores) would otherwise make a
    trace each, every few seconds per consumer, and bury the traces worth reading."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
    from opentelemetry.sdk.trace.sampling import _get_from_env_or_default as from_environment

    class UntracedCallsDropped(Sampler):
        def __init__(self, inner: Sampler) -> None:
            self.inner = inner

        def should_sample(  # the SDK's signature
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> Any:
            parent = trace.get_current_span(parent_context).get_span_context()
            if kind is SpanKind.CLIENT and not parent.is_valid:
                return SamplingResult(Decision.DROP)
            return self.inner.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

        def get_description(self) -> str:
            return f"UntracedCallsDropped{{{self.inner.get_description()}}}"

    return UntracedCallsDropped(from_environment())


# -- the trace in events ---------------------------------------------------------------


def stamp(events: Sequence[CloudEvent]) -> Sequence[CloudEvent]:
    """``events`` carrying the current span's context as their ``traceparent`` (and
    ``tracestate``), so their consumers continue this trace; as they are when tracing is off
    or no span is current (an event keeps the trace it was caused in)."""
    if _state.provider is None:
        return events
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    traceparent = carrier.get("traceparent")
    if traceparent is None:
        return events
    tracestate = carrier.get("tracestate")
    return [_with_trace(event, traceparent, tracestate) for event in events]


def _with_trace(event: CloudEvent, traceparent: str, tracestate: str | None) -> CloudEvent:
    update: dict[str, Any] = {"traceparent": traceparent}
    if tracestate is not None or "tracestate" in (event.model_extra or {}):
        update["tracestate"] = tracestate  # None: an older state must not outlive its parent
    return event.model_copy(update=update)


def consumer_span(
    event: CloudEvent, stream: str, group: str, entry_id: str, attempt: int
) -> contextlib.AbstractContextManager[Span]:
    """The span of handling one message: kind CONSUMER, a child of the event's
    ``traceparent``, with the messaging and CloudEvents semantic-convention attributes."""
    if _state.provider is None:
        return _NO_SPAN
    carrier = {"traceparent": event.traceparent or ""}
    tracestate = (event.model_extra or {}).get("tracestate")
    if isinstance(tracestate, str):
        carrier["tracestate"] = tracestate
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "redis",
        "messaging.operation.type": "process",
        "messaging.destination.name": stream,
        "messaging.consumer.group.name": group,
        "messaging.message.id": entry_id,
        "cloudevents.event_id": event.id,
        "cloudevents.event_type": event.type,
        "cloudevents.event_source": event.source,
        "riverbed.attempt": attempt,
    }
    return _state.tracer.start_as_current_span(
        f"process {stream}",
        context=_W3C.extract(carrier),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )


def record_outcome(span: Span, kind: str, reason: str, error: BaseException | None) -> None:
    """What handling came to (``ack``, ``retry``, ``dead``), on the message's span; a
    failure (not a deferral, which did not try) marks it an error."""
    if not span.is_recording():
        return
    span.set_attribute("riverbed.outcome", kind)
    if reason:
        span.set_attribute("riverbed.outcome.reason", reason)
    if error is not None and reason != "deferred":
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{reason}: {type(error).__name__}"))


def client_span(
    name: str, attributes: Mapping[str, AttributeValue]
) -> contextlib.AbstractContextManager[Span]:
    """A span of kind CLIENT around one effect (an SMTP send, an HTTP call, a database
    transaction), a child of the current span; a span recording nothing when off."""
    if _state.provider is None:
        return _NO_SPAN
    return _state.tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes)


# -- HTTP --------------------------------------------------------------------------------


class TracedRequests:
    """ASGI middleware: one SERVER span per HTTP request while tracing is on, the child of
    the request's W3C ``traceparent`` header when it has a valid one (an invalid one is
    ignored, as Trace Context asks); named ``<method> <route template>``. Off, it only
    passes the request on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _state.provider is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await _traced_request(self.app, scope, receive, send)


async def _traced_request(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in (b"traceparent", b"tracestate")
    }
    method = scope["method"]
    status = 0

    async def send_noting_status(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    with _state.tracer.start_as_current_span(
        method,
        context=_W3C.extract(carrier),
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
        },
    ) as span:
        try:
            await app(scope, receive, send_noting_status)
        finally:
            route = getattr(scope.get("route"), "path", None)  # the template, never the path
            if route is not None:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            if status:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))


def _flag(environ: Mapping[str, str], name: str) -> bool:
    """An OpenTelemetry boolean: only 'true' (any case) is true; another value than
    'false' or empty is read as false with a warning, as the specification says."""
    value = environ.get(name, "").strip().lower()
    if value not in ("", "true", "false"):
        log.warning("not a boolean; read as false", variable=name, value=value)
    return value == "true"
