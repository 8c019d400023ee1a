"""A Redis failover under load, through Sentinel: no accepted event lost with the gateway's
WAIT on, and every service carries on without a restart.

A primary, one replica and three Sentinels (``redis-server --sentinel``, short timings);
the gateway and the email service (with a scripted SMTP server) connected through
``REDIS_SENTINELS``. Clients publish through the gateway's HTTP API while the primary is
killed with ``kill -9``; Sentinel promotes the replica; the old primary is started again
and Sentinel makes it the new primary's replica; publishing goes on. Then: every
event answered 202 must be on the promoted primary's stream (with ``GATEWAY_MIN_REPLICAS=1``;
with WAIT off the number lost is reported, not asserted: on loopback the replica is rarely
behind), both services are ready again, and the email service sent every accepted event
that is on the stream.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio

from riverbed import keys
from riverbed.service import Service
from riverbed.settings import RedisSettings
from riverbed.testing import fast_settings, wait_for
from riverbed.testing.sentinel import LocalSentinelSet
from riverbed_email.bootstrap import create_service as create_email
from riverbed_email.settings import EmailSettings
from riverbed_email.testing import ScriptedSmtpServer
from riverbed_gateway.bootstrap import create_service as create_gateway
from riverbed_gateway.settings import GatewaySettings

pytestmark = [pytest.mark.integration, pytest.mark.fault]

CLIENTS = 8  # requests in flight at once
ACCEPTED_BEFORE = 100  # events accepted before the kill
ACCEPTED_AFTER = 100  # events accepted after the promotion


@dataclass
class Load:
    """Clients posting one event each request, with ids of their own (the dedup key)."""

    http: httpx.AsyncClient
    #: the stored event id of each event answered 202 -> the address it is sent to
    accepted: dict[str, str] = field(default_factory=dict)
    refused: dict[int, int] = field(default_factory=dict)  # status -> count
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self) -> None:
        while not self.stop.is_set():
            event_id = uuid.uuid4().hex
            body = {
                "type": "email.requested.v1",
                "id": event_id,
                "data": {"to": f"{event_id}@example.com", "subject": "Hi", "text": "Hello"},
            }
            try:
                response = await self.http.post("/v1/events", json=body)
            except httpx.HTTPError:
                response = None
            status = -1 if response is None else response.status_code
            if response is not None and status == 202:
                self.accepted[response.json()["event_id"]] = body["data"]["to"]
            else:
                self.refused[status] = self.refused.get(status, 0) + 1
            # s: at most ~50 requests/s a client, so the emails to send stay a few thousand
            await asyncio.sleep(0.02)


def asgi_client(service: Service[Any, Any]) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app, raise_app_exceptions=False),
        base_url="http://service",
        headers={"Authorization": "Bearer test-key"},
    )


@pytest.fixture
async def sentinel_set(tmp_path: Path) -> AsyncIterator[LocalSentinelSet]:
    started = LocalSentinelSet(tmp_path / "redis")
    try:
        await asyncio.to_thread(started.start)
        yield started
    finally:
        started.stop()


@pytest.fixture
async def smtp() -> AsyncIterator[ScriptedSmtpServer]:
    server = await ScriptedSmtpServer().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.mark.parametrize("min_replicas", [1, 0], ids=["wait-on", "wait-off"])
async def test_a_failover_under_load_loses_no_accepted_event_with_wait_on(
    sentinel_set: LocalSentinelSet,
    smtp: ScriptedSmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    record_property: Any,
    min_replicas: int,
) -> None:
    monkeypatch.delenv("REDIS_CLUSTER", raising=False)
    for name, value in sentinel_set.environment().items():
        monkeypatch.setenv(name, value)
    redis_settings = RedisSettings(socket_timeout=2, connect_timeout=1)  # from the variables
    assert redis_settings.sentinels  # the services find Redis through the Sentinels only
    gateway = create_gateway(
        GatewaySettings(
            local_api_key="test-key",
            log_format="json",
            min_replicas=min_replicas,
            replication_timeout_ms=1_000,
            run_scheduler=False,
        ),
        redis_settings=redis_settings,
    )
    email = create_email(
        EmailSettings(
            log_format="json",
            smtp_host=smtp.host,
            smtp_port=smtp.port,
            smtp_security="none",
            smtp_timeout_s=5.0,
            smtp_local_hostname="failover.test",
            from_address="Riverbed <noreply@riverbed.test>",
            # a handler cut off by the failover retries within the test's time, not in 1 min
            retry_schedule_ms=[200],
            send_lease_s=10,  # s, the least: a lease the dead primary held stops nobody long
            domain_rate_per_s=10_000,  # every test address is at example.com
            domain_burst=1_000,
        ),
        redis_settings=redis_settings,
        consumer_settings=fast_settings(),
    )
    await gateway.start()
    await email.start()
    async with asgi_client(gateway) as gateway_http, asgi_client(email) as email_http:
        load = Load(gateway_http)
        clients = [asyncio.create_task(load.client()) for _ in range(CLIENTS)]
        try:
            await wait_for(lambda: len(load.accepted) >= ACCEPTED_BEFORE, 20, "load before")
            sentinel_set.kill_primary()
            await asyncio.to_thread(sentinel_set.wait_for_promotion)
            promoted_at = len(load.accepted)
            # the new primary's replica, without which WAIT 1 can succeed no more
            await asyncio.to_thread(sentinel_set.restart_old_primary)
            await wait_for(
                lambda: len(load.accepted) >= promoted_at + ACCEPTED_AFTER, 20, "load after"
            )
        finally:
            load.stop.set()
            await asyncio.gather(*clients)
        try:
            on_stream = await events_on_stream(sentinel_set.replica.port)
            lost = sorted(set(load.accepted) - on_stream)
            record_property("accepted", len(load.accepted))
            record_property("lost", len(lost))
            print(  # the figure this test exists to state (pytest -s shows it)
                f"\nGATEWAY_MIN_REPLICAS={min_replicas}: {len(load.accepted)} accepted, "
                f"{len(lost)} lost, refused by status {load.refused}"
            )
            if min_replicas:
                assert lost == [], f"{len(lost)} accepted events lost with WAIT on"
            for service, http in (("gateway", gateway_http), ("email", email_http)):
                await wait_for(lambda h=http: ready(h), 20, f"the {service} ready again")
            kept = [to for event_id, to in load.accepted.items() if event_id in on_stream]
            await wait_for(
                lambda: all(smtp.messages_to(to) for to in kept),
                30,
                "the email service sending every accepted event, before and after the failover",
            )
        finally:
            await email.stop()
            await gateway.stop()


async def ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


async def events_on_stream(port: int) -> set[str]:
    """The ids of the events on the email stream of the Redis at ``port``."""
    client = redis.asyncio.Redis(port=port)
    try:
        entries = await client.xrange(keys.stream_key("email.requested"))
    finally:
        await client.aclose()
    return {json.loads(fields[b"event"])["id"] for _, fields in entries}
