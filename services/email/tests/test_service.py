"""The email service through the real consumer: test Redis, scripted SMTP server, short schedule.

Requests go to a stream unique to the test (``EMAIL_STREAM``); outcome events go to their
registry streams (``email.sent``…), where each test finds its own by causation id.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio
from prometheus_client import REGISTRY

from riverbed import keys
from riverbed.publisher import Publisher
from riverbed.service import Service
from riverbed.testing import wait_for
from riverbed_contracts import CloudEvent, event_from_entry
from riverbed_contracts.email import SendEmail
from riverbed_contracts.registry import new_event
from riverbed_email.keys import email_domain_slowdown_key, email_suppression_key
from riverbed_email.testing import ScriptedSmtpServer

from .conftest import ServiceFactory, settings_for

pytestmark = pytest.mark.integration


class Harness:
    def __init__(
        self, redis_client: redis.asyncio.Redis, server: ScriptedSmtpServer, unique: str
    ) -> None:
        self.redis = redis_client
        self.server = server
        self.unique = unique
        self.stream = f"email.requested.t{unique}"
        self.addresses: list[str] = []

    def address(self, name: str, domain: str = "example.com") -> str:
        address = f"{name}-{self.unique}@{domain}"
        self.addresses.append(address)
        return address

    async def request(self, to: str, **data: Any) -> CloudEvent:
        values: dict[str, Any] = {"subject": "Hello", "text": "Hi there"}
        values.update(data)
        event = new_event(SendEmail(to=to, **values))
        await Publisher(self.redis).publish(event, stream=self.stream)
        return event

    async def outcome(self, stream: str, request: CloudEvent) -> CloudEvent | None:
        """The event on ``stream`` caused by ``request``, if there is one yet."""
        for _, fields in await self.redis.xrange(keys.stream_key(stream)):
            event = event_from_entry(fields)
            if event.causationid == request.id:
                return event
        return None

    async def wait_outcome(self, stream: str, request: CloudEvent) -> CloudEvent:
        found: list[CloudEvent] = []

        async def present() -> bool:
            event = await self.outcome(stream, request)
            if event is not None:
                found.append(event)
            return event is not None

        await wait_for(present, what=f"{stream} caused by {request.id}")
        return found[0]

    async def settled(self) -> bool:
        """Everything read was acknowledged or dead-lettered, and no retry is waiting."""
        pending = await self.redis.xpending(keys.stream_key(self.stream), "email")
        return int(pending["pending"]) == 0

    async def dead_letters(self) -> list[dict[str, str]]:
        entries = await self.redis.xrange(keys.dead_letter_key(self.stream))
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


@pytest.fixture
async def harness(
    redis_client: redis.asyncio.Redis, smtp_server: ScriptedSmtpServer, unique: str
) -> AsyncIterator[Harness]:
    running = Harness(redis_client, smtp_server, unique)
    yield running
    if running.addresses:
        await redis_client.hdel(email_suppression_key(), *running.addresses)


async def start(
    start_email: ServiceFactory,
    harness: Harness,
    *,
    email: dict[str, Any] | None = None,
    **consumer: Any,
) -> Service:
    """The email service on the harness's stream; ``email`` overrides its settings."""
    values: dict[str, Any] = {
        "stream": harness.stream,
        "retry_schedule_ms": [50],
        "domain_rate_per_s": 1_000,
        "domain_burst": 100,
        "metrics_domains": ["example.com"],
        "retention_interval_s": 3_600,
    }
    values.update(email or {})
    settings = settings_for(harness.server, **values)
    service: Service = await start_email(settings, **consumer)
    return service


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_request_is_sent_once_published_as_email_sent_and_acknowledged(
    start_email: ServiceFactory, harness: Harness
) -> None:
    sent_before = sample("riverbed_email_sent_total", domain="example.com")
    await start(start_email, harness)
    to = harness.address("ada")
    request = await harness.request(to)

    sent = await harness.wait_outcome("email.sent", request)
    assert sent.data == {
        "request_id": request.id,
        "to": to,
        "message_id": f"<{request.id}@riverbed.test>",
        "attempts": 1,
    }
    await wait_for(harness.settled, what="the request acknowledged")
    [mail] = harness.server.messages_to(to)
    assert mail.message_id == f"<{request.id}@riverbed.test>"
    assert mail.message["Subject"] == "Hello"
    assert sample("riverbed_email_sent_total", domain="example.com") == sent_before + 1


async def test_a_greylisted_request_is_retried_on_the_schedule_until_accepted(
    start_email: ServiceFactory, harness: Harness
) -> None:
    retried_before = sample("riverbed_email_retried_total", domain="other", reason="smtp_4xx")
    await start(start_email, harness)
    domain = f"grey-{harness.unique}.test"  # its own domain: its own slow-down level
    to = harness.address("grey", domain)
    harness.server.on(to, "451", "451", "250")
    request = await harness.request(to)

    sent = await harness.wait_outcome("email.sent", request)
    assert sent.data["attempts"] == 3
    assert harness.server.attempts[to.lower()] == 3
    assert len(harness.server.messages_to(to)) == 1
    await wait_for(harness.settled, what="the request acknowledged")
    assert await harness.dead_letters() == []
    retried = sample("riverbed_email_retried_total", domain="other", reason="smtp_4xx")
    assert retried == retried_before + 2
    assert await harness.redis.get(email_domain_slowdown_key(domain)) == b"2"


async def test_a_dropped_connection_is_retried_and_the_mail_then_sent(
    start_email: ServiceFactory, harness: Harness
) -> None:
    await start(start_email, harness)
    to = harness.address("flaky")
    harness.server.on(to, "drop", "250")
    request = await harness.request(to)
    sent = await harness.wait_outcome("email.sent", request)
    assert sent.data["attempts"] == 2
    assert len(harness.server.messages_to(to)) == 1


async def test_a_550_is_dead_lettered_the_address_suppressed_and_email_failed_published(
    start_email: ServiceFactory, harness: Harness
) -> None:
    await start(start_email, harness)
    to = harness.address("gone")
    harness.server.on(to, "550 5.1.1 no such user here")
    request = await harness.request(to)

    failed = await harness.wait_outcome("email.failed", request)
    assert failed.data == {
        "request_id": request.id,
        "to": to,
        "reason": "550 5.1.1 no such user here",
        "permanent": True,
        "smtp_code": 550,
        "attempts": 1,
    }
    await wait_for(harness.settled, what="the request dead-lettered")
    [dead] = await harness.dead_letters()
    assert (dead["reason"], dead["error_type"]) == ("permanent", "PermanentError")
    assert "550 5.1.1" in dead["error_message"]
    assert json.loads(dead["event"])["id"] == request.id
    suppression = await harness.redis.hget(email_suppression_key(), to.lower())
    assert suppression is not None
    assert json.loads(suppression)["smtp_code"] == 550

    # the next request to that address is not even tried
    again = await harness.request(to, subject="Second try")
    suppressed = await harness.wait_outcome("email.suppressed", again)
    assert suppressed.data["reason"] == "550 5.1.1 no such user here"
    await wait_for(harness.settled, what="the suppressed request acknowledged")
    assert harness.server.attempts[to.lower()] == 1
    assert len(await harness.dead_letters()) == 1


async def test_a_request_deferred_on_every_attempt_is_given_up_with_email_failed(
    start_email: ServiceFactory, harness: Harness
) -> None:
    await start(start_email, harness, email={"max_attempts": 3})
    to = harness.address("busy")
    harness.server.on(to, "451")
    request = await harness.request(to)

    failed = await harness.wait_outcome("email.failed", request)
    assert (failed.data["permanent"], failed.data["attempts"], failed.data["smtp_code"]) == (
        False,
        3,
        451,
    )
    await wait_for(harness.settled, what="the request dead-lettered")
    [dead] = await harness.dead_letters()
    # the service counts its attempts: permanent for the runtime, named for operators
    assert (dead["reason"], dead["error_type"]) == ("permanent", "AttemptsExhausted")
    assert dead["error_message"].startswith("gave up after 3 attempts: 451")
    assert harness.server.attempts[to.lower()] == 3
    assert await harness.redis.hget(email_suppression_key(), to.lower()) is None


async def test_a_burst_to_one_throttled_domain_is_all_sent_without_using_up_attempts(
    start_email: ServiceFactory, harness: Harness
) -> None:
    # 10 mails/s to the domain, one at a time, no waiting in-process: most requests are
    # rescheduled several times, far more often than the 2 attempts allowed
    await start(
        start_email,
        harness,
        email={
            "domain_rate_per_s": 10,
            "domain_burst": 1,
            "rate_limit_max_wait_ms": 0,
            "max_attempts": 2,
        },
    )
    domain = f"slow-{harness.unique}.example"  # a rate-limit state no other test shares
    requests = [await harness.request(harness.address(f"r{n}", domain)) for n in range(8)]

    for request in requests:
        sent = await harness.wait_outcome("email.sent", request)
        assert sent.data["attempts"] == 1, "rescheduling for the domain's pace is no attempt"
    await wait_for(harness.settled, what="every request acknowledged")
    assert await harness.dead_letters() == []
    assert all(harness.server.attempts[to.lower()] == 1 for to in harness.addresses)


async def test_a_missing_template_variable_is_dead_lettered_naming_it(
    start_email: ServiceFactory, harness: Harness
) -> None:
    await start(start_email, harness)
    to = harness.address("tpl")
    request = await harness.request(
        to, subject=None, text=None, template="welcome", variables={"plan": "pro"}
    )
    failed = await harness.wait_outcome("email.failed", request)
    assert "'name' is undefined" in failed.data["reason"]
    await wait_for(harness.settled, what="the request dead-lettered")
    [dead] = await harness.dead_letters()
    assert "template 'welcome'" in dead["error_message"]
    assert "'name' is undefined" in dead["error_message"]
    assert harness.server.attempts[to.lower()] == 0


async def test_a_template_request_arrives_as_multipart_with_the_variables_filled_in(
    start_email: ServiceFactory, harness: Harness
) -> None:
    await start(start_email, harness)
    to = harness.address("welcome")
    request = await harness.request(
        to, subject=None, text=None, template="welcome", variables={"name": "<Ada>"}
    )
    await harness.wait_outcome("email.sent", request)
    [mail] = harness.server.messages_to(to)
    message = mail.message
    assert message["Subject"] == "Welcome to Riverbed, <Ada>"
    html = message.get_body(("html",))
    assert html is not None
    assert "&lt;Ada&gt;" in html.get_content()


async def test_metrics_of_the_email_service_are_served_on_metrics(
    start_email: ServiceFactory, harness: Harness
) -> None:
    service = await start(start_email, harness)
    request = await harness.request(harness.address("metrics"))
    await harness.wait_outcome("email.sent", request)
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://email") as client:
        body = (await client.get("/metrics")).text
    assert 'riverbed_email_sent_total{domain="example.com"}' in body
    assert 'riverbed_email_smtp_seconds_bucket{le="0.01",verdict="sent"}' in body


async def test_the_lifespan_wires_the_settings_and_gives_records_a_pool_of_their_own(
    start_email: ServiceFactory, harness: Harness
) -> None:
    service = await start(start_email, harness, email={"max_attempts": 7})
    delivery = service.container.delivery
    assert delivery.policy.max_attempts == 7
    request = await harness.request(harness.address("lifespan"))
    await harness.wait_outcome("email.sent", request)
    assert delivery.recorder.ledger._redis is not service.redis, "the records' own pool"

    await service.stop()
    with pytest.raises(RuntimeError, match="not started"):
        _ = service.container
    assert len(delivery.recorder) == 0, "every record written before the lifespan closed"
