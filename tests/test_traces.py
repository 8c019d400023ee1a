"""One trace from an HTTP request at the gateway to the SMTP send of the email service.

The gateway and the email service run as their real ``Service``s in this process, on a
private redis-server, the email service sending to a scripted SMTP server on loopback;
tracing is on with the SDK's in-memory exporter (``riverbed.testing.tracing``). In one
process there is one tracer provider, so both services' spans carry one resource here;
that each service names itself (``service.name``) is shown by ``test_tracing_config.py``,
whose gateway is a process of its own exporting over OTLP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from riverbed import keys
from riverbed.settings import RedisSettings
from riverbed.testing import RedisServer, fast_settings, wait_for
from riverbed.testing.tracing import recorded_spans, span_named
from riverbed_contracts import event_from_entry
from riverbed_email.bootstrap import create_service as create_email
from riverbed_email.settings import EmailSettings
from riverbed_email.testing import ScriptedSmtpServer
from riverbed_gateway.bootstrap import create_service as create_gateway
from riverbed_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

KEY = "traces-test-key"
#: the upstream caller's own trace: the gateway's span must continue it
CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture
async def smtp() -> AsyncIterator[ScriptedSmtpServer]:
    server = await ScriptedSmtpServer().start()
    try:
        yield server
    finally:
        await server.stop()


def _parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_trace_runs_from_the_gateway_request_to_the_smtp_send(
    own_redis: RedisServer, smtp: ScriptedSmtpServer
) -> None:
    redis_settings = RedisSettings(url=own_redis.url)
    to = "ada@example.com"
    with recorded_spans() as exporter:
        gateway = create_gateway(
            GatewaySettings(local_api_key=KEY, log_format="json"), redis_settings=redis_settings
        )
        email = create_email(
            EmailSettings(
                log_format="json",
                smtp_host=smtp.host,
                smtp_port=smtp.port,
                smtp_security="none",
                smtp_timeout_s=5.0,
                smtp_local_hostname="traces.test",
                from_address="Riverbed <no-reply@riverbed.test>",
            ),
            redis_settings=redis_settings,
            consumer_settings=fast_settings(),
        )
        await gateway.start()
        await email.start()
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=gateway.app), base_url="http://gateway"
            ) as client:
                answer = await client.post(
                    "/v1/events",
                    json={
                        "type": "email.requested.v1",
                        "data": {"to": to, "subject": "Traced", "text": "Hello"},
                    },
                    headers={
                        "Authorization": f"Bearer {KEY}",
                        "traceparent": f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01",
                    },
                )
            assert answer.status_code == 202, answer.text
            await wait_for(lambda: smtp.messages_to(to), timeout=30, what="the mail")
            await wait_for(
                lambda: any(s.name == "smtp send" for s in exporter.get_finished_spans()),
                timeout=30,
                what="the SMTP send's span",
            )
        finally:
            await email.stop()
            await gateway.stop()
        spans = exporter.get_finished_spans()

    request = span_named(spans, "POST /v1/events")
    consumer = span_named(spans, "process email.requested")
    send = span_named(spans, "smtp send")
    trace_id = int(CALLER_TRACE_ID, 16)
    # one trace, the caller's: the request continues it, the SMTP send ends it
    assert {request.context.trace_id, consumer.context.trace_id, send.context.trace_id} == {
        trace_id
    }
    assert (request.kind, consumer.kind, send.kind) == (
        SpanKind.SERVER,
        SpanKind.CONSUMER,
        SpanKind.CLIENT,
    )
    # the chain: caller -> gateway request -> (its XADD) -> email consumer -> smtp send
    assert _parent_of(request) == int(CALLER_SPAN_ID, 16)
    assert _parent_of(consumer) == request.context.span_id
    assert _parent_of(send) == consumer.context.span_id
    appends = [s for s in spans if s.name == "XADD" and _parent_of(s) == request.context.span_id]
    assert len(appends) == 1, [(s.name, _parent_of(s)) for s in spans]
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 202

    # the event on the stream carries the gateway span's context, and the consumer span
    # names that entry
    client = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        [(entry_id, fields)] = await client.xrange(keys.stream_key("email.requested"))
    finally:
        await client.aclose()
    event = event_from_entry(fields)
    assert event.traceparent == f"00-{CALLER_TRACE_ID}-{request.context.span_id:016x}-01"
    assert consumer.attributes is not None
    assert (
        dict(consumer.attributes).items()
        >= {
            "messaging.system": "redis",
            "messaging.destination.name": "email.requested",
            "messaging.consumer.group.name": "email",
            "messaging.message.id": entry_id.decode(),
            "cloudevents.event_id": event.id,
            "riverbed.outcome": "ack",
        }.items()
    )
