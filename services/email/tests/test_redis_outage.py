"""Redis going away at the worst moments of a delivery, and coming back.

Each test runs the email service on a private ``redis-server`` with its data in an
append-only file, as production runs it (``deploy/redis/redis.conf``): a clean restart keeps
the streams, the pending entries and the sent markers. (A Redis that loses its data loses
the requests too: nothing is redelivered, so there is nothing to double.) Redis is stopped
with SIGTERM — a clean shutdown, what a routine restart is — and started again on the same
port and directory.

The outage lengths are the scenario, not waits: the service must ride out an outage of
that length (longer than the heartbeat timeout, 5 s, in the reproduction). Everything the
tests wait for is a condition.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from prometheus_client import REGISTRY

from riverbed import keys
from riverbed.publisher import Publisher
from riverbed.service import Service
from riverbed.settings import RedisSettings
from riverbed.testing import RedisServer, fast_settings, wait_for
from riverbed_contracts import CloudEvent, event_from_entry
from riverbed_contracts.email import SendEmail
from riverbed_contracts.registry import new_event
from riverbed_email.adapters.redis_stores import RedisSendLedger
from riverbed_email.adapters.smtp import SmtpSender
from riverbed_email.bootstrap import create_service
from riverbed_email.domain.compose import OutgoingEmail, message_id_for
from riverbed_email.domain.outcome_events import outcome_event_id
from riverbed_email.domain.smtp_replies import SmtpResult
from riverbed_email.keys import email_sent_key
from riverbed_email.testing import ScriptedSmtpServer

from .conftest import settings_for

pytestmark = [pytest.mark.integration, pytest.mark.fault]

#: s; the user's report: a routine clean restart keeps Redis away about this long
RESTART_OUTAGE_S = 5.0
#: s; long enough for every retry the service makes to hit the outage at least once
SHORT_OUTAGE_S = 2.0


class DurableRedis:
    """A private redis-server whose data survives a restart (AOF), stoppable at will."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.down = asyncio.Event()

    @property
    def url(self) -> str:
        return self.server.url

    async def stop(self) -> None:
        await asyncio.to_thread(self.server.stop)  # SIGTERM: a clean shutdown, AOF synced
        self.down.set()

    async def restart_after(self, outage_s: float) -> None:
        """Once stopped, stay down ``outage_s`` seconds (the outage), then start again."""
        await self.down.wait()
        await asyncio.sleep(outage_s)  # the outage itself, not a wait for anything
        await asyncio.to_thread(self.server.start)
        self.down.clear()


@pytest.fixture
def durable_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[DurableRedis]:
    monkeypatch.delenv("REDIS_CLUSTER", raising=False)  # one node, also in a cluster run
    if shutil.which("redis-server") is None:
        pytest.skip("needs the redis-server binary to restart a private Redis")
    directory = Path(tempfile.mkdtemp(prefix="rb-redis-"))
    server = RedisServer(directory, extra_config={"appendonly": "yes"})
    server.start()
    try:
        yield DurableRedis(server)
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def client(durable_redis: DurableRedis) -> AsyncIterator[redis.asyncio.Redis]:
    connection = redis.asyncio.Redis.from_url(durable_redis.url)
    yield connection
    await connection.aclose()


class Services:
    """Email services on the durable Redis; stopped at teardown."""

    def __init__(self, url: str, smtp: ScriptedSmtpServer, stream: str) -> None:
        self.url = url
        self.smtp = smtp
        self.stream = stream
        self.started: list[Service] = []

    async def start(
        self,
        *,
        sender: Any = None,
        consumer: dict[str, Any] | None = None,
        redis_url: str | None = None,
        **email: Any,
    ) -> Service:
        values: dict[str, Any] = {
            "stream": self.stream,
            "retry_schedule_ms": [50],
            "domain_rate_per_s": 1_000,
            "domain_burst": 100,
            "retention_interval_s": 3_600,
        }
        values.update(email)
        # production's visibility timeout (60 s), so that an outage of seconds leaves
        # held entries to the heartbeat (1 s, timeout 5 s), as it does in production
        timers: dict[str, Any] = {"visibility_timeout_ms": 60_000, **(consumer or {})}
        service = create_service(
            settings_for(self.smtp, **values),
            redis_settings=RedisSettings(url=redis_url or self.url),
            consumer_settings=fast_settings(**timers),
            sender=sender,
        )
        await service.start()
        self.started.append(service)
        return service


@pytest.fixture
async def services(
    durable_redis: DurableRedis, smtp_server: ScriptedSmtpServer, unique: str
) -> AsyncIterator[Services]:
    running = Services(durable_redis.url, smtp_server, f"email.requested.t{unique}")
    yield running
    for service in running.started:
        await service.stop()


def requests_to(addresses: list[str]) -> list[CloudEvent]:
    return [new_event(SendEmail(to=to, subject="Hello", text="Once only")) for to in addresses]


async def outcomes(
    client: redis.asyncio.Redis, stream: str, requests: list[CloudEvent]
) -> list[CloudEvent]:
    """Every entry of ``stream`` caused by one of ``requests``, copies included."""
    ids = {r.id for r in requests}
    return [
        event
        for _, fields in await client.xrange(keys.stream_key(stream))
        if (event := event_from_entry(fields)).causationid in ids
    ]


async def settled(client: redis.asyncio.Redis, stream: str) -> bool:
    """Nothing pending in the email group and nothing waiting in the delay store."""
    try:
        pending = await client.xpending(keys.stream_key(stream), "email")
        waiting = await client.zcard(keys.delay_key(stream))
    except redis.exceptions.ConnectionError:
        return False  # Redis is still starting
    return int(pending["pending"]) == 0 and waiting == 0


def sent_once_each(smtp: ScriptedSmtpServer, requests: list[CloudEvent]) -> None:
    """Counted by Message-ID at the relay: each request's mail arrived exactly once."""
    arrived = Counter(mail.message_id for mail in smtp.received)
    assert arrived == Counter({message_id_for(r.id, "riverbed.test"): 1 for r in requests})


# -- (a) the reproduction: the relay's 250 arrives while Redis restarts -----------------


async def test_a_redis_restart_while_the_relay_accepts_sends_every_request_exactly_once(
    durable_redis: DurableRedis,
    client: redis.asyncio.Redis,
    services: Services,
    smtp_server: ScriptedSmtpServer,
    unique: str,
) -> None:
    await services.start()
    requests = requests_to([f"r{n}-{unique}@example.com" for n in range(20)])
    for request in requests:
        smtp_server.on(request.data["to"], "data:hold")  # the 250 waits for the test
    await Publisher(client).publish_many(requests, stream=services.stream)
    await wait_for(lambda: smtp_server.held == 20, what="all 20 mails at the relay, 250 held")

    await durable_redis.stop()
    smtp_server.release_held()  # the relay accepts every mail while Redis is down
    await wait_for(lambda: len(smtp_server.received) == 20, what="every mail accepted")
    await durable_redis.restart_after(RESTART_OUTAGE_S)

    await wait_for(
        lambda: settled(client, services.stream), timeout=60, what="every request settled"
    )
    sent_once_each(smtp_server, requests)
    sent = await outcomes(client, "email.sent", requests)
    assert {e.id for e in sent} == {outcome_event_id(r.id, "sent") for r in requests}
    for request in requests:  # the markers outlived the restart
        assert await client.exists(email_sent_key(request.id))
    assert await client.xlen(keys.dead_letter_key(services.stream)) == 0


class Partition:
    """A TCP proxy in front of Redis for one replica: :meth:`cut` drops its connections and
    refuses new ones (its network to Redis is down), :meth:`mend` lets it through again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.is_cut = False
        self.transports: set[asyncio.BaseTransport] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def cut(self) -> None:
        self.is_cut = True
        for transport in list(self.transports):
            transport.abort()

    def mend(self) -> None:
        self.is_cut = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        ends = {writer.transport, up_writer.transport}
        self.transports |= ends
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        self.transports -= ends

    @staticmethod
    async def _pump(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65_536):
                target.write(data)
                await target.drain()
        except OSError:
            pass
        finally:
            target.transport.abort()


@pytest.fixture
async def partition(durable_redis: DurableRedis) -> AsyncIterator[Partition]:
    proxy = Partition(durable_redis.server.port)
    yield proxy
    await proxy.stop()


async def owned_by(client: redis.asyncio.Redis, stream: str, consumer: str) -> int:
    """How many pending entries of the email group ``consumer`` holds (0 while Redis starts)."""
    try:
        pending = await client.xpending_range(keys.stream_key(stream), "email", "-", "+", 1000)
    except redis.exceptions.ConnectionError:
        return -1
    return sum(1 for entry in pending if entry["consumer"] == consumer.encode())


async def test_a_sibling_taking_the_entries_over_after_the_outage_does_not_send_them_again(
    durable_redis: DurableRedis,
    client: redis.asyncio.Redis,
    services: Services,
    partition: Partition,
    smtp_server: ScriptedSmtpServer,
    unique: str,
) -> None:
    # replica A holds every request; after an outage of 5 s every heartbeat is older than
    # the heartbeat timeout, and replica B, which sees Redis back first, takes A's entries
    # over while A's markers still wait in A's memory
    await services.start(consumer_name="replica-a", redis_url=await partition.start())
    requests = requests_to([f"r{n}-{unique}@example.com" for n in range(20)])
    for request in requests:
        smtp_server.on(request.data["to"], "data:hold")
    await Publisher(client).publish_many(requests, stream=services.stream)
    await wait_for(lambda: smtp_server.held == 20, what="all 20 mails at the relay, 250 held")
    await services.start(consumer_name="replica-b")  # after A read them all: B holds none
    assert await owned_by(client, services.stream, "replica-a") == 20

    await durable_redis.stop()
    partition.cut()  # A's way to Redis stays down after Redis is back
    smtp_server.release_held()
    await wait_for(lambda: len(smtp_server.received) == 20, what="every mail accepted")
    await durable_redis.restart_after(RESTART_OUTAGE_S)

    async def taken_over() -> bool:
        return await owned_by(client, services.stream, "replica-a") == 0

    await wait_for(taken_over, timeout=30, what="replica B to take A's entries over")
    partition.mend()
    await wait_for(
        lambda: settled(client, services.stream), timeout=60, what="every request settled"
    )
    sent_once_each(smtp_server, requests)
    sent = await outcomes(client, "email.sent", requests)
    assert {e.id for e in sent} == {outcome_event_id(r.id, "sent") for r in requests}


# -- (b) Redis away between the record and the outcome event ----------------------------


async def test_redis_away_between_the_marker_and_email_sent_on_the_last_attempt(
    durable_redis: DurableRedis,
    client: redis.asyncio.Redis,
    services: Services,
    smtp_server: ScriptedSmtpServer,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record_many = RedisSendLedger.record_many

    async def record_then_lose_redis(self: RedisSendLedger, records: Any) -> list[bool]:
        stored = await record_many(self, records)
        await durable_redis.stop()  # the marker is in; email.sent is not out yet
        return stored

    monkeypatch.setattr(RedisSendLedger, "record_many", record_then_lose_redis)
    # the only attempt is the last (the runtime's own limit said too, for older versions)
    await services.start(max_attempts=1, consumer={"max_deliveries": 1})
    [request] = requests_to([f"last-{unique}@example.com"])
    await Publisher(client).publish(request, stream=services.stream)
    await durable_redis.restart_after(SHORT_OUTAGE_S)

    await wait_for(lambda: settled(client, services.stream), timeout=30, what="the request settled")
    sent = await outcomes(client, "email.sent", [request])
    assert [e.id for e in sent] == [outcome_event_id(request.id, "sent")]
    assert await client.xlen(keys.dead_letter_key(services.stream)) == 0
    sent_once_each(smtp_server, [request])


class LoseRedisAfterTheAnswer:
    """The real SMTP sender; Redis is stopped as the relay's answer comes back."""

    def __init__(self, sender: SmtpSender, redis_server: DurableRedis) -> None:
        self.sender = sender
        self.redis_server = redis_server

    async def send(self, email: OutgoingEmail) -> SmtpResult:
        result = await self.sender.send(email)
        await self.redis_server.stop()
        return result


async def test_redis_away_as_the_relay_refuses_email_failed_once_and_no_second_try(
    durable_redis: DurableRedis,
    client: redis.asyncio.Redis,
    services: Services,
    smtp_server: ScriptedSmtpServer,
    unique: str,
) -> None:
    to = f"policy-{unique}@example.com"
    smtp_server.on(to, "554 5.7.1 refused by policy", "250")  # it would take it next time
    settings = settings_for(smtp_server)
    await services.start(sender=LoseRedisAfterTheAnswer(SmtpSender(settings), durable_redis))
    [request] = requests_to([to])
    await Publisher(client).publish(request, stream=services.stream)
    await durable_redis.restart_after(SHORT_OUTAGE_S)

    await wait_for(lambda: settled(client, services.stream), timeout=30, what="the request settled")
    failed = await outcomes(client, "email.failed", [request])
    assert [e.id for e in failed] == [outcome_event_id(request.id, "failed")]
    assert failed[0].data["smtp_code"] == 554
    assert smtp_server.attempts[to] == 1, "given up once: the relay is not tried again"
    assert await outcomes(client, "email.sent", [request]) == []
    [(_, dead)] = await client.xrange(keys.dead_letter_key(services.stream))
    assert dead[b"reason"] == b"permanent"


async def test_redis_away_as_the_last_attempt_is_deferred_email_failed_once(
    durable_redis: DurableRedis,
    client: redis.asyncio.Redis,
    services: Services,
    smtp_server: ScriptedSmtpServer,
    unique: str,
) -> None:
    to = f"busy-{unique}@example.com"
    smtp_server.on(to, "451")
    settings = settings_for(smtp_server)
    await services.start(
        sender=LoseRedisAfterTheAnswer(SmtpSender(settings), durable_redis),
        max_attempts=1,
        consumer={"max_deliveries": 1},
    )
    [request] = requests_to([to])
    await Publisher(client).publish(request, stream=services.stream)
    await durable_redis.restart_after(SHORT_OUTAGE_S)

    await wait_for(lambda: settled(client, services.stream), timeout=30, what="the request settled")
    failed = await outcomes(client, "email.failed", [request])
    assert [e.id for e in failed] == [outcome_event_id(request.id, "failed")]
    assert (failed[0].data["permanent"], failed[0].data["smtp_code"]) == (False, 451)
    assert smtp_server.attempts[to] == 1
    [(_, dead)] = await client.xrange(keys.dead_letter_key(services.stream))
    assert dead[b"error_type"] == b"AttemptsExhausted"


# -- SIGTERM while a marker waits for Redis ----------------------------------------------


def unrecorded_total() -> float:
    return REGISTRY.get_sample_value("riverbed_email_sent_unrecorded_total") or 0.0


async def test_a_stop_while_redis_is_away_drains_then_names_the_unrecorded_send(
    durable_redis: DurableRedis,
    client: redis.asyncio.Redis,
    services: Services,
    smtp_server: ScriptedSmtpServer,
    unique: str,
) -> None:
    service = await services.start(consumer={"shutdown_timeout_s": 1})
    [request] = requests_to([f"term-{unique}@example.com"])
    smtp_server.on(request.data["to"], "data:hold")
    await Publisher(client).publish(request, stream=services.stream)
    await wait_for(lambda: smtp_server.held == 1, what="the mail at the relay")
    await durable_redis.stop()
    smtp_server.release_held()
    gauge = "riverbed_email_outcomes_unrecorded"
    await wait_for(
        lambda: (REGISTRY.get_sample_value(gauge) or 0) >= 1, what="the send waiting for Redis"
    )
    before = unrecorded_total()

    await service.stop()  # SIGTERM's path: drain (1 s here), then stop
    services.started.remove(service)
    # the drain waited its timeout for the marker, then cut the handler off: the send is
    # named and counted (a redelivery, once Redis is back, will send it again)
    assert unrecorded_total() == before + 1
    assert len(smtp_server.received) == 1
