"""A promoter process for fault tests: promotes due items of one stream's delay store in a
loop until killed. WORKER_STREAM: the stream; REDIS_URL: where; WORKER_BATCH: items a script.
"""

from __future__ import annotations

import asyncio
import os

from riverbed.connection import connect
from riverbed.delay import DelayStore
from riverbed.settings import RedisSettings


async def promote_forever() -> None:
    client = connect(RedisSettings())  # REDIS_URL, and REDIS_CLUSTER on the cluster tier
    store = DelayStore(client, os.environ["WORKER_STREAM"])
    batch = int(os.environ.get("WORKER_BATCH", "200"))
    print("promoting", flush=True)
    while True:
        await store.promote_due(batch=batch)


if __name__ == "__main__":
    asyncio.run(promote_forever())
