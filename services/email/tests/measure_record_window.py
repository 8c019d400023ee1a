"""Measure the window in which a kill -9 of the email service sends a mail twice: from the
relay answering 250 to the sent marker acknowledged by Redis.

The real service (consumer, handler, SmtpSender, RedisSendLedger) on a throwaway
redis-server, against the scripted aiosmtpd relay running on an event loop of its own (a
thread: a relay is another machine, it must not queue behind the service's handlers). The
relay stamps each 250 as it answers; the ledger stamps each marker as Redis acknowledges
it; both with ``time.perf_counter`` (one clock). Two loads: one request at a time, and a
burst of many at once (handlers then share the service's event loop, and the marker waits
its turn). Prints percentiles; asserts nothing. Not collected by pytest; run it by hand:

    uv run --frozen python services/email/tests/measure_record_window.py [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis.asyncio

from riverbed.logging import configure_logging
from riverbed.publisher import Publisher
from riverbed.settings import RedisSettings
from riverbed.testing import RedisServer, fast_settings
from riverbed_contracts.email import SendEmail
from riverbed_contracts.registry import new_event
from riverbed_email import testing as scripted
from riverbed_email.adapters.redis_stores import RedisSendLedger
from riverbed_email.bootstrap import create_service
from riverbed_email.settings import EmailSettings

answered: dict[str, float] = {}  # Message-ID -> when the relay answered 250
recorded: dict[str, float] = {}  # Message-ID -> when Redis acknowledged the marker
more_recorded: list[asyncio.Event] = []  # the running measurement's; set at each record


async def until_recorded(count: int) -> None:
    while len(recorded) < count:
        more_recorded[0].clear()
        await more_recorded[0].wait()


def instrument() -> None:
    handle_data = scripted._Handler.handle_DATA

    async def stamped_data(self: Any, server: Any, session: Any, envelope: Any) -> str:
        reply: str = await handle_data(self, server, session, envelope)
        if reply.startswith("250"):
            content = envelope.original_content or b""
            for line in content.split(b"\r\n"):
                if line.lower().startswith(b"message-id:"):
                    answered[line.split(b":", 1)[1].strip().decode()] = time.perf_counter()
        return reply

    scripted._Handler.handle_DATA = stamped_data  # type: ignore[method-assign]
    record_many = RedisSendLedger.record_many

    async def stamped_records(self: RedisSendLedger, records: Any) -> list[bool]:
        stored: list[bool] = await record_many(self, records)
        now = time.perf_counter()
        for _, record in records:
            recorded[record.message_id] = now
        more_recorded[0].set()
        return stored

    RedisSendLedger.record_many = stamped_records  # type: ignore[method-assign]


class RelayThread:
    """The scripted relay on its own event loop, in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self._call(scripted.ScriptedSmtpServer().start())

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self._call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


async def run(url: str, requests: int, at_once: bool) -> list[float]:
    answered.clear()
    recorded.clear()
    more_recorded[:] = [asyncio.Event()]
    relay = RelayThread()
    smtp = relay.server
    settings = EmailSettings(
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        smtp_security="none",
        smtp_local_hostname="measure.test",
        from_address="no-reply@riverbed.test",
        stream="email.requested.measure",
        domain_rate_per_s=100_000,
        domain_burst=100_000,
        log_level="WARNING",
    )
    service = create_service(
        settings,
        redis_settings=RedisSettings(url=url),
        consumer_settings=fast_settings(concurrency=500, batch_size=500),
    )
    await service.start()
    client = redis.asyncio.Redis.from_url(url)
    events = [
        new_event(SendEmail(to=f"r{n}@example.com", subject="Hi", text="Measured"))
        for n in range(requests)
    ]
    publisher = Publisher(client)
    if at_once:
        await publisher.publish_many(events, stream=settings.stream)
    else:
        for sent, event in enumerate(events, start=1):
            await publisher.publish(event, stream=settings.stream)
            await until_recorded(sent)
    await until_recorded(requests)
    await service.stop()
    relay.stop()
    await client.aclose()
    return [recorded[m] - answered[m] for m in recorded]


def describe(name: str, windows: list[float]) -> str:
    ms = sorted(w * 1000 for w in windows)
    cut = statistics.quantiles(ms, n=100)
    return (
        f"{name}: {len(ms)} sends; relay's 250 -> marker acknowledged: "
        f"p50 {cut[49]:.2f} ms, p99 {cut[98]:.2f} ms, max {ms[-1]:.2f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    options = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("needs redis-server on PATH", file=sys.stderr)
        return 1
    configure_logging("WARNING", "json")  # as a service at that level: no line per mail
    instrument()
    directory = Path(tempfile.mkdtemp(prefix="rb-measure-"))
    server = RedisServer(directory, extra_config={"appendonly": "yes"})
    server.start()
    try:
        one = asyncio.run(run(server.url, options.requests, at_once=False))
        burst = asyncio.run(run(server.url, options.requests, at_once=True))
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    print(describe("one at a time", one))
    print(describe(f"{options.requests} at once", burst))
    return 0


if __name__ == "__main__":
    sys.exit(main())
