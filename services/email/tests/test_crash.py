"""kill -9 of the email service after the relay accepted a mail: it is not sent again, and
its ``email.sent`` is out exactly once in effect (one event id, however many copies)."""

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
from riverbed_contracts import CloudEvent, event_from_entry
from riverbed_contracts.email import SendEmail
from riverbed_contracts.registry import new_event
from riverbed_email.domain.outcome_events import outcome_event_id
from riverbed_email.keys import email_sent_key
from riverbed_email.testing import ScriptedSmtpServer

pytestmark = [pytest.mark.integration, pytest.mark.fault]

WORKER = Path(__file__).parent / "workers" / "email_worker.py"


async def outcomes_of(
    redis_client: redis.asyncio.Redis, stream: str, request_id: str
) -> list[CloudEvent]:
    return [
        event
        for _, fields in await redis_client.xrange(keys.stream_key(stream))
        if (event := event_from_entry(fields)).causationid == request_id
    ]


async def kill_after_acceptance_and_restart(
    processes: Processes,
    smtp_server: ScriptedSmtpServer,
    redis_client: redis.asyncio.Redis,
    redis_url: str,
    unique: str,
    tmp_path: Path,
    *,
    pause_at: str,
    max_attempts: int = 20,
) -> tuple[CloudEvent, int]:
    """Run a victim that pauses at ``pause_at`` once the relay accepted one request, kill
    it with SIGKILL there, start a successor under the same consumer name and wait until
    the request is settled. Returns the request and the successor's HTTP port."""
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
        "EMAIL_MAX_ATTEMPTS": str(max_attempts),
        "EMAIL_CONSUMER_NAME": "email-1",  # the successor re-reads this consumer's pending
        "EMAIL_LOG_FORMAT": "json",
        "RIVERBED_CONSUMER_BLOCK_MS": "100",
        "RIVERBED_CONSUMER_RECLAIM_INTERVAL_MS": "100",
        "RIVERBED_CONSUMER_ACK_FLUSH_MS": "1",
    }
    victim = processes.start(
        "victim",
        WORKER,
        {
            **env,
            "EMAIL_PORT": str(free_port()),
            "WORKER_PAUSE_FILE": str(pause_file),
            "WORKER_PAUSE_AT": pause_at,
        },
    )
    to = f"ada-{unique}@example.com"
    request = new_event(SendEmail(to=to, subject="Once", text="Only once, please."))
    await Publisher(redis_client).publish(request, stream=stream)

    await wait_for(pause_file.exists, timeout=30, what="the victim to send and pause")
    assert len(smtp_server.messages_to(to)) == 1, "the relay has the mail"
    assert await redis_client.exists(email_sent_key(request.id)), "…the send is recorded"
    pending = await redis_client.xpending(keys.stream_key(stream), "email")
    assert int(pending["pending"]) == 1, "…and the request is not acknowledged"

    victim.send_signal(signal.SIGKILL)
    assert await asyncio.to_thread(victim.wait, 10) == -signal.SIGKILL

    port = free_port()
    successor = processes.start("successor", WORKER, {**env, "EMAIL_PORT": str(port)})

    async def settled() -> bool:
        pending = await redis_client.xpending(keys.stream_key(stream), "email")
        return int(pending["pending"]) == 0

    await wait_for(settled, timeout=30, what="the successor to settle the request")
    assert successor.poll() is None, processes.log("successor")
    assert len(smtp_server.messages_to(to)) == 1, "sent once, not again after redelivery"
    assert smtp_server.attempts[to.lower()] == 1
    assert await redis_client.xlen(keys.dead_letter_key(stream)) == 0, "not dead-lettered"
    return request, port


async def test_sigkill_after_the_relay_accepted_and_before_the_ack_does_not_send_twice(
    processes: Processes,
    smtp_server: ScriptedSmtpServer,
    redis_client: redis.asyncio.Redis,
    redis_url: str,
    unique: str,
    tmp_path: Path,
) -> None:
    request, port = await kill_after_acceptance_and_restart(
        processes, smtp_server, redis_client, redis_url, unique, tmp_path, pause_at="returned"
    )
    sent = await outcomes_of(redis_client, "email.sent", request.id)
    # published by the victim, and again by the successor: the same event both times
    assert {e.id for e in sent} == {outcome_event_id(request.id, "sent")}
    assert {e.data["message_id"] for e in sent} == {f"<{request.id}@riverbed.test>"}
    assert len({e.model_dump_json() for e in sent}) == 1
    assert "already accepted by the relay; not sent again" in processes.log("successor")
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert "riverbed_email_already_sent_total 1.0" in metrics


async def test_sigkill_between_the_marker_and_email_sent_on_the_last_attempt_still_reports_it(
    processes: Processes,
    smtp_server: ScriptedSmtpServer,
    redis_client: redis.asyncio.Redis,
    redis_url: str,
    unique: str,
    tmp_path: Path,
) -> None:
    # one attempt allowed: the redelivery after the kill is past the last attempt, and
    # must still publish the email.sent the victim never got out (not dead-letter it)
    request, _ = await kill_after_acceptance_and_restart(
        processes,
        smtp_server,
        redis_client,
        redis_url,
        unique,
        tmp_path,
        pause_at="publishing-sent",
        max_attempts=1,
    )
    sent = await outcomes_of(redis_client, "email.sent", request.id)
    assert [e.id for e in sent] == [outcome_event_id(request.id, "sent")]
    assert sent[0].data["attempts"] == 1
    assert await outcomes_of(redis_client, "email.failed", request.id) == []
