"""Riverbed's worker and producer for the peer benchmark, each run as its own process.

- worker: a :class:`riverbed.consumer.StreamConsumer` with the default settings
  (``RIVERBED_CONSUMER_*`` from the environment, every reliability feature on: idempotency
  markers set with the acknowledgement, one outcome per message, keep-alive, reclaim
  loop) and a no-op handler. Done when every event is handled **and** acknowledged.
- producer: ``Publisher.publish_many`` in batches of 1,000 (``best``), or
  ``Publisher.publish`` one event at a time (``defaults``).

    python bench/peers/riverbed_side.py worker URL STREAM SETTINGS EXPECT WARM
    python bench/peers/riverbed_side.py producer URL STREAM SETTINGS EVENTS_FILE FIRST COUNT
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tally import Tally, parse_args, read_payloads, report

from riverbed import eventloop, keys
from riverbed.connection import connect
from riverbed.consumer import Message, StreamConsumer, Subscription
from riverbed.logging import configure_logging
from riverbed.publisher import Publisher
from riverbed.settings import ConsumerSettings, RedisSettings
from riverbed_contracts import CloudEvent

GROUP = "bench"
PUBLISH_BATCH = 1_000


async def worker(url: str, stream: str, expect: int, warm: int) -> None:
    client = connect(RedisSettings(url=url))
    await client.ping()
    tally = Tally(expect, warm)

    async def handler(message: Message[Any]) -> None:
        tally.add()

    consumer = StreamConsumer(
        client,
        Subscription(stream=stream, group=GROUP, handler=handler),  # idempotent by default
        settings=ConsumerSettings(),
        consumer_name="peers-worker",
        service="bench",
    )
    key = keys.stream_key(stream)

    async def nothing_pending() -> bool:
        try:
            return not (await client.xpending(key, GROUP))["pending"]
        except Exception:  # the group may not exist for an instant at start
            return False

    report("ready")
    tally.start()
    main = consumer.start()
    try:
        await tally.finish(nothing_pending)
    finally:
        consumer.stop()
        await main
        await client.aclose()


async def producer(url: str, stream: str, settings: str, payloads: list[str]) -> None:
    client = connect(RedisSettings(url=url))
    await client.ping()
    publisher = Publisher(client)
    events = [CloudEvent.model_validate_json(payload) for payload in payloads]
    started = time.time()
    if settings == "best":
        for at in range(0, len(events), PUBLISH_BATCH):
            await publisher.publish_many(events[at : at + PUBLISH_BATCH], stream=stream)
    else:
        for event in events:
            await publisher.publish(event, stream=stream)
    report("done", start=started, end=time.time(), count=len(events))
    await client.aclose()


def main() -> None:
    configure_logging(level="WARNING", fmt="json", service="bench")
    role, args = parse_args(sys.argv)
    if role == "worker":
        url, stream, _settings, expect, warm = args
        eventloop.run(worker(url, stream, int(expect), int(warm)))
    else:
        url, stream, settings, path, first, count = args
        eventloop.run(producer(url, stream, settings, read_payloads(path, int(first), int(count))))


if __name__ == "__main__":
    main()
