"""kill -9 between the ledger's commit and the acknowledgement: the redelivery changes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from sqlalchemy import func, select

from riverbed import keys
from riverbed.publisher import Publisher
from riverbed.testing import free_port, wait_for
from riverbed_contracts import event_from_entry
from riverbed_payments.adapters.database import create_engine, sqlite_url
from riverbed_payments.adapters.ledger import SqlLedger
from riverbed_payments.adapters.tables import outbox, postings, processed_messages, transactions
from riverbed_payments.settings import INBOUND_STREAMS
from riverbed_payments.testing import succeeded

pytestmark = [pytest.mark.integration, pytest.mark.fault]

WORKER = Path(__file__).parent / "workers" / "payments_worker.py"
#: every stream the worker reads or writes, routed to names unique to the test: an
#: unrouted inbound stream would be the shared one, where other tests publish
STREAMS = (*INBOUND_STREAMS, "payment.recorded", "payment.refund.recorded", "email.requested")


class Workers:
    """Payments service processes started by a test; all are killed at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.tmp_path / f"{name}.log", "ab") as log:  # the child keeps its own copy
            process = subprocess.Popen(
                [sys.executable, str(WORKER)],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    running = Workers(tmp_path)
    yield running
    running.kill_all()


async def _ledger_state(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            counts = {
                table.name: (await conn.execute(select(func.count()).select_from(table))).scalar()
                for table in (transactions, postings, processed_messages, outbox)
            }
        balances = {(b.account, b.balance) for b in await SqlLedger(engine).balances()}
    finally:
        await engine.dispose()
    return {**counts, "balances": balances}


async def test_sigkill_after_the_commit_and_before_the_ack_changes_nothing_on_redelivery(
    workers: Workers,
    redis_client: redis.asyncio.Redis,
    redis_url: str,
    unique: str,
    tmp_path: Path,
) -> None:
    routes = {s: f"{s}.t{unique}" for s in STREAMS}
    database = sqlite_url(tmp_path / "payments.db")
    pause_file = tmp_path / "paused"
    env = {
        "REDIS_URL": redis_url,
        "PAYMENTS_DATABASE_URL": database,
        "PAYMENTS_STREAM_ROUTES": json.dumps(routes),
        "PAYMENTS_CONSUMER_NAME": "payments-1",  # the successor re-reads this one's pending
        "PAYMENTS_LOG_FORMAT": "json",
        "PAYMENTS_OUTBOX_POLL_INTERVAL_S": "0.05",
        "PAYMENTS_API_KEY": "k",
        "RIVERBED_CONSUMER_BLOCK_MS": "100",
        "RIVERBED_CONSUMER_RECLAIM_INTERVAL_MS": "100",
        "RIVERBED_CONSUMER_ACK_FLUSH_MS": "1",
    }
    victim = workers.start(
        "victim", {**env, "PAYMENTS_PORT": str(free_port()), "WORKER_PAUSE_FILE": str(pause_file)}
    )
    event = succeeded("pi_crash", 4200, fee_amount=120, receipt_email="ada@example.com")
    await Publisher(redis_client).publish(event, stream=routes["payment.succeeded"])

    await wait_for(pause_file.exists, timeout=30, what="the victim to commit and pause")
    committed = await _ledger_state(database)
    assert committed["ledger_transactions"] == 1, "the ledger has the payment"
    assert committed["ledger_postings"] == 3
    assert committed["outbox"] == 2, "payment.recorded and the receipt request are queued"
    source = keys.stream_key(routes["payment.succeeded"])
    assert int((await redis_client.xpending(source, "payments"))["pending"]) == 1, (
        "…and the event is not acknowledged"
    )

    victim.send_signal(signal.SIGKILL)
    assert await asyncio.to_thread(victim.wait, 10) == -signal.SIGKILL

    port = free_port()
    successor = workers.start("successor", {**env, "PAYMENTS_PORT": str(port)})

    async def acknowledged() -> bool:
        return int((await redis_client.xpending(source, "payments"))["pending"]) == 0

    await wait_for(acknowledged, timeout=30, what="the successor to settle the redelivery")
    assert successor.poll() is None, workers.log("successor")
    assert await _ledger_state(database) == committed, "the redelivery changed nothing"
    assert '"outcome": "already_processed"' in workers.log("successor")

    async def published() -> bool:
        entries = await redis_client.xrange(keys.stream_key(routes["email.requested"]))
        return bool(entries)

    await wait_for(published, timeout=30, what="the outbox relayed (by either process)")
    recorded = [
        event_from_entry(f).id
        for _, f in await redis_client.xrange(keys.stream_key(routes["payment.recorded"]))
    ]
    assert len(set(recorded)) == 1, "however often relayed, one event id"
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert 'riverbed_payments_events_total{outcome="already_processed"} 1.0' in metrics
