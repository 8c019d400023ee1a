"""A promoter process for fault tests: promotes due items of one stream's delay store in a
loop until killed. WORKER_STREAM: the stream; REDIS_URL: where; WORKER_BATCH: items a script.
"""

from __future__ import annotations

import asyncio
import os

import redis.asyncio

from riverbed.delay import DelayStore


async def promote_forever() -> None:
    client = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])
    store = DelayStore(client, os.environ["WORKER_STREAM"])
    batch = int(os.environ.get("WORKER_BATCH", "200"))
    print("promoting", flush=True)
    while True:
        await store.promote_due(batch=batch)


if __name__ == "__main__":
    asyncio.run(promote_forever())
