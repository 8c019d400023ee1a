"""kill -9 between the SMTP server's acceptance and the acknowledgement: no second send."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
import redis.asyncio

from riverbed import keys
from riverbed.publisher import Publisher
from riverbed.testing import Processes, free_port, wait_for
from riverbed_contracts import event_from_entry
from riverbed_contracts.email import SendEmail
from riverbed_contracts.registry import new_event
from riverbed_email.testing import ScriptedSmtpServer

pytestmark = [pytest.mark.integration, pytest.mark.fault]

WORKER = Path(__file__).parent / "workers" / "email_worker.py"


async def test_sigkill_after_the_relay_accepted_and_before_the_ack_does_not_send_twice(
    processes: Processes,
    smtp_server: ScriptedSmtpServer,
    redis_client: redis.asyncio.Redis,
    redis_url: str,
    unique: str,
    tmp_path: Path,
) -> None:
    stream = f"email.requested.t{unique}"
    pause_file = tmp_path / "paused"
    env = {
        "REDIS_URL": redis_url,
        "EMAIL_STREAM": stream,
        "EMAIL_SMTP_HOST": smtp_server.host,
        "EMAIL_SMTP_PORT": str(smtp_server.port),
        "EMAIL_SMTP_SECURITY": "none",
        "EMAIL_SMTP_LOCAL_HOSTNAME": "worker.test",
        "EMAIL_FROM_ADDRESS": "no-reply@riverbed.test",
        "EMAIL_CONSUMER_NAME": "email-1",  # the successor re-reads this consumer's pending
        "EMAIL_LOG_FORMAT": "json",
        "RIVERBED_CONSUMER_BLOCK_MS": "100",
        "RIVERBED_CONSUMER_RECLAIM_INTERVAL_MS": "100",
        "RIVERBED_CONSUMER_ACK_FLUSH_MS": "1",
    }
    victim = processes.start(
        "victim",
        WORKER,
        {**env, "EMAIL_PORT": str(free_port()), "WORKER_PAUSE_FILE": str(pause_file)},
    )
    to = f"ada-{unique}@example.com"
    request = new_event(SendEmail(to=to, subject="Once", text="Only once, please."))
    await Publisher(redis_client).publish(request, stream=stream)

    await wait_for(pause_file.exists, timeout=30, what="the victim to send and pause")
    assert len(smtp_server.messages_to(to)) == 1, "the relay has the mail"
    pending = await redis_client.xpending(keys.stream_key(stream), "email")
    assert int(pending["pending"]) == 1, "…and the request is not acknowledged"

    victim.send_signal(signal.SIGKILL)
    assert await asyncio.to_thread(victim.wait, 10) == -signal.SIGKILL

    port = free_port()
    successor = processes.start("successor", WORKER, {**env, "EMAIL_PORT": str(port)})

    async def acknowledged() -> bool:
        pending = await redis_client.xpending(keys.stream_key(stream), "email")
        return int(pending["pending"]) == 0

    await wait_for(acknowledged, timeout=30, what="the successor to settle the request")
    assert successor.poll() is None, processes.log("successor")
    assert len(smtp_server.messages_to(to)) == 1, "sent once, not again after redelivery"
    assert smtp_server.attempts[to.lower()] == 1

    sent = [
        event
        for _, fields in await redis_client.xrange(keys.stream_key("email.sent"))
        if (event := event_from_entry(fields)).causationid == request.id
    ]
    assert [e.data["message_id"] for e in sent] == [f"<{request.id}@riverbed.test>"]
    assert "already accepted by the relay; not sent again" in processes.log("successor")
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert "riverbed_email_already_sent_total 1.0" in metrics
