"""FastStream's worker and producer for the peer benchmark, run with the Python of its own
throwaway virtualenv (never the workspace's: it must not see Riverbed).

- worker, ``best``: a batch stream subscriber (``StreamSub(batch=True, max_records=100)``)
  in a consumer group, one ``XACK`` per batch after the handler; ``defaults``: a plain
  stream subscriber in a consumer group, one message per handler call and one ``XACK`` each.
  The group is what makes it a work queue (several workers share it; a restarted one picks
  up); without one FastStream reads the stream from ``$`` and acknowledges nothing. Its
  per-message INFO log is off (``logger=None``), as Riverbed logs nothing per message.
  The handler is a no-op taking the decoded JSON body.
- producer, ``best``: ``broker.publish(..., pipeline=pipe)`` for 1,000 events, then one
  ``pipe.execute()`` (``publish_batch`` exists for lists only); ``defaults``: ``await
  broker.publish(...)`` one at a time.

    python bench/peers/faststream_side.py worker URL STREAM SETTINGS EXPECT WARM
    python bench/peers/faststream_side.py producer URL STREAM SETTINGS EVENTS_FILE FIRST COUNT
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from faststream.redis import RedisBroker, StreamSub
from tally import Tally, parse_args, read_payloads, report

GROUP = "bench"
READ_COUNT = 100
PUBLISH_BATCH = 1_000


async def worker(url: str, stream: str, settings: str, expect: int, warm: int) -> None:
    broker = RedisBroker(url, logger=None)
    tally = Tally(expect, warm)
    if settings == "best":
        batch = StreamSub(
            stream, group=GROUP, consumer="peers-worker", batch=True, max_records=READ_COUNT
        )

        @broker.subscriber(stream=batch)
        async def handle_batch(bodies: list[dict[str, Any]]) -> None:
            tally.add(len(bodies))

    else:

        @broker.subscriber(stream=StreamSub(stream, group=GROUP, consumer="peers-worker"))
        async def handle(body: dict[str, Any]) -> None:
            tally.add()

    await broker.connect()
    client = broker._connection
    assert client is not None

    async def nothing_pending() -> bool:
        return not (await client.xpending(stream, GROUP))["pending"]

    report("ready")
    tally.start()
    await broker.start()
    try:
        await tally.finish(nothing_pending)
    finally:
        await broker.stop()


async def producer(url: str, stream: str, settings: str, payloads: list[str]) -> None:
    broker = RedisBroker(url, logger=None)
    await broker.connect()
    client = broker._connection
    assert client is not None
    bodies = [json.loads(payload) for payload in payloads]
    started = time.time()
    if settings == "best":
        for at in range(0, len(bodies), PUBLISH_BATCH):
            async with client.pipeline(transaction=False) as pipe:
                for body in bodies[at : at + PUBLISH_BATCH]:
                    await broker.publish(body, stream=stream, pipeline=pipe)
                await pipe.execute()
    else:
        for body in bodies:
            await broker.publish(body, stream=stream)
    report("done", start=started, end=time.time(), count=len(bodies))
    await broker.stop()


def main() -> None:
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # the loop Riverbed runs on; plain asyncio without it
        run = asyncio.run
    role, args = parse_args(sys.argv)
    if role == "worker":
        url, stream, settings, expect, warm = args
        run(worker(url, stream, settings, int(expect), int(warm)))
    else:
        url, stream, settings, path, first, count = args
        run(producer(url, stream, settings, read_payloads(path, int(first), int(count))))


if __name__ == "__main__":
    main()
