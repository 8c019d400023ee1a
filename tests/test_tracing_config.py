"""Tracing is configured from the standard OpenTelemetry variables, and is off without them.

- Off: with no OTEL_* variable a service installs no SDK tracer provider, instruments no
  Redis client, and its spans record nothing (a fresh interpreter, as a service starts).
- On: a real gateway process given ``OTEL_EXPORTER_OTLP_ENDPOINT`` exports its request
  span and its Redis calls over OTLP/HTTP to a receiver on loopback, as ``gateway``.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from riverbed.testing import Processes, RedisServer, free_port, wait_for
from riverbed.tracing import TracingConfigurationError, exporting_requested

KEY = "tracing-config-key"

#: run in a fresh interpreter: what Service.run does first, then what a service would see
_OFF_PROBE = textwrap.dedent(
    """
    import json
    import redis.asyncio
    from opentelemetry import trace
    from riverbed import tracing
    from riverbed_contracts import CloudEvent

    on = tracing.configure_tracing("gateway")
    span = tracing.tracer().start_span("probe")
    event = CloudEvent(type="t", data={})
    print(json.dumps({
        "on": on,
        "provider": type(trace.get_tracer_provider()).__module__
        + "." + type(trace.get_tracer_provider()).__name__,
        "recording": span.is_recording(),
        "redis_instrumented": hasattr(redis.asyncio.Redis.execute_command, "__wrapped__"),
        "stamped": tracing.stamp([event])[0] is not event,
    }))
    """
)


def _environment_without_otel(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(extra)
    return env


@pytest.mark.parametrize(
    "variables",
    [
        {},
        {"OTEL_SERVICE_NAME": "edge", "OTEL_TRACES_SAMPLER": "always_on"},  # no endpoint
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_TRACES_EXPORTER": "none"},
    ],
    ids=["no-variables", "no-endpoint", "sdk-disabled", "exporter-none"],
)
def test_without_an_endpoint_no_sdk_provider_is_installed_and_nothing_recorded(
    variables: dict[str, str],
) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", _OFF_PROBE],
        env=_environment_without_otel(**variables),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout.splitlines()[-1]) == {
        "on": False,
        "provider": "opentelemetry.trace.ProxyTracerProvider",  # the API's: no SDK
        "recording": False,
        "redis_instrumented": False,
        "stamped": False,
    }


def test_the_endpoint_variables_decide_and_unsupported_ones_are_refused() -> None:
    assert exporting_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert exporting_requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not exporting_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "})
    with pytest.raises(TracingConfigurationError, match=r"'otlp'.*'none'"):
        exporting_requested({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(TracingConfigurationError, match="http/protobuf"):
        exporting_requested(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        )


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint on loopback that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, dict[str, Any]]] = []  # (service.name, span as a dict)
        self.url = ""

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found = {"name": span.name, "trace_id": span.trace_id.hex()}
                    self.spans.append((resource.get("service.name", ""), found))
        return web.Response(body=b"", content_type="application/x-protobuf")

    def names(self) -> set[str]:
        return {span["name"] for _, span in self.spans}


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    found = OtlpReceiver()
    app = web.Application()
    app.router.add_post("/v1/traces", found.receive)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    found.url = f"http://127.0.0.1:{port}"
    try:
        yield found
    finally:
        await runner.cleanup()


async def test_with_an_endpoint_the_gateway_process_exports_its_spans_as_gateway(
    own_redis: RedisServer, receiver: OtlpReceiver, processes: Processes, tmp_path: Any
) -> None:
    port = free_port()
    script = tmp_path / "gateway.py"
    script.write_text("from riverbed_gateway.cli import main\nraise SystemExit(main([]))\n")
    gateway = processes.start(
        "gateway",
        script,
        {
            **{k: "" for k in os.environ if k.startswith("OTEL_")},
            "REDIS_URL": own_redis.url,
            "GATEWAY_PORT": str(port),
            "RIVERBED_API_KEY": KEY,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms between exports: the test waits less
        },
    )
    base_url = f"http://127.0.0.1:{port}"
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as client:

        async def ready() -> bool:
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.TransportError:
                assert gateway.poll() is None, processes.log("gateway")
                return False

        await wait_for(ready, timeout=30, what="the gateway ready")
        answer = await client.post(
            "/v1/events",
            json={
                "type": "email.requested.v1",
                "data": {"to": "a@example.com", "subject": "s", "text": "t"},
            },
            headers={"Authorization": f"Bearer {KEY}", "traceparent": traceparent},
        )
        assert answer.status_code == 202, answer.text
        await wait_for(
            lambda: {"POST /v1/events", "XADD"} <= receiver.names(),
            timeout=30,
            what=f"the request's spans at the receiver (got {receiver.names()})",
        )
    gateway.send_signal(signal.SIGTERM)
    assert gateway.wait(timeout=30) == 0, processes.log("gateway")
    traced = [s for s in receiver.spans if s[1]["trace_id"] == traceparent[3:35]]
    assert {name for name, _ in traced} == {"gateway"}  # OTEL_SERVICE_NAME unset: its own
    assert {"POST /v1/events", "XADD"} <= {span["name"] for _, span in traced}
