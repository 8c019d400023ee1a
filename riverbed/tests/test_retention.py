"""Every stream is bounded: streams no group reads and dead letters are trimmed by age."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import redis.asyncio
from pydantic import ValidationError

from riverbed import keys
from riverbed.consumer import Message
from riverbed.monitor import StreamMonitor
from riverbed.publisher import Publisher, written_streams
from riverbed.service import Service
from riverbed.settings import RedisSettings, RetentionSettings, ServiceSettings
from riverbed.testing import fast_settings, free_port, make_event, wait_for

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


async def add_aged(client: redis.asyncio.Redis, key: str, count: int, age_ms: int) -> None:
    """Append ``count`` entries whose ids say they were written ``age_ms`` ago."""
    start_ms = int(time.time() * 1000) - age_ms
    async with client.pipeline(transaction=False) as pipe:
        for n in range(count):
            pipe.xadd(key, make_event(n).to_entry(), id=f"{start_ms}-{n + 1}")
        await pipe.execute()


async def test_a_stream_no_group_reads_is_trimmed_by_age(
    publisher: Publisher, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"t.{unique}"
    key = keys.stream_key(stream)
    await add_aged(redis_client, key, 300, age_ms=8 * DAY_MS)  # past the 7-day default
    fresh = await publisher.publish_many([make_event(n) for n in range(10)], stream=stream)

    removed = await StreamMonitor(redis_client, [stream]).apply_retention(
        stream, RetentionSettings()
    )
    left = [entry_id.decode() for entry_id, _ in await redis_client.xrange(key)]
    # approximate trimming removes whole macro nodes: at most one node mixes old and new
    assert removed >= 250
    assert set(fresh) <= set(left), "entries within their retention are kept"


async def test_per_stream_retention_overrides_the_default(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"t.{unique}"
    key = keys.stream_key(stream)
    await add_aged(redis_client, key, 200, age_ms=2 * DAY_MS)
    monitor = StreamMonitor(redis_client, [stream])
    assert await monitor.apply_retention(stream, RetentionSettings()) == 0, "7 days: kept"
    short = RetentionSettings(per_stream_days={stream: 1})
    assert await monitor.apply_retention(stream, short) >= 150


async def test_a_stream_a_group_reads_keeps_what_it_has_not_acknowledged_however_old(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"t.{unique}"
    key = keys.stream_key(stream)
    await add_aged(redis_client, key, 200, age_ms=60 * DAY_MS)
    await redis_client.xgroup_create(key, "slow", id="0")
    removed = await StreamMonitor(redis_client, [stream]).apply_retention(
        stream, RetentionSettings(unconsumed_days=1)
    )
    assert removed == 0
    assert await redis_client.xlen(key) == 200


async def test_dead_letters_are_trimmed_after_their_own_retention(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"t.{unique}"
    dlq = keys.dead_letter_key(stream)
    await add_aged(redis_client, dlq, 200, age_ms=31 * DAY_MS)
    await add_aged(redis_client, dlq, 5, age_ms=DAY_MS)
    monitor = StreamMonitor(redis_client, [stream])
    assert await monitor.apply_retention(stream, RetentionSettings()) >= 150
    assert await redis_client.xlen(dlq) >= 5, "dead letters within 30 days are kept"


def test_retention_settings_refuse_what_cannot_be_a_retention(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RIVERBED_RETENTION_PER_STREAM_DAYS", '{"email.sent": 1.5}')
    settings = RetentionSettings()
    assert settings.unconsumed_ms("email.sent") == int(1.5 * DAY_MS)
    assert settings.unconsumed_ms("webhook.delivery.succeeded") == 7 * DAY_MS
    with pytest.raises(ValidationError, match="more than 0 days"):
        RetentionSettings(per_stream_days={"email.sent": 0})
    with pytest.raises(ValidationError):
        RetentionSettings(dead_letter_days=0)


async def test_a_service_trims_the_streams_it_writes_that_no_group_reads(
    redis_url: str, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    consumed, outcomes = f"t.{unique}", f"t.{unique}.outcomes"
    await add_aged(redis_client, keys.stream_key(outcomes), 300, age_ms=8 * DAY_MS)

    async def handler(message: Message[Any]) -> None:
        return None

    service = Service(
        ServiceSettings(service_name="retention-test", port=free_port(), retention_interval_s=0.1),
        redis_settings=RedisSettings(url=redis_url),
        consumer_settings=fast_settings(),
    )
    service.subscribe(consumed, handler, group="g")
    await service.start()
    try:
        # the service's own publisher writes the outcome stream: it is the one to trim it
        await service.consumers[0].publisher.publish(make_event(1), stream=outcomes)
        assert outcomes in written_streams()
        key = keys.stream_key(outcomes)
        await wait_for(lambda: _below(redis_client.xlen(key), 100), what="the outcomes trimmed")
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            text = (await http.get("/metrics")).text
        assert f'riverbed_retention_trimmed_total{{stream="{outcomes}"}}' in text
    finally:
        await service.stop()


async def _below(value: Any, ceiling: int) -> bool:
    return int(await value) < ceiling


async def test_one_pass_trims_more_than_one_xtrim_call_would(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"t.{unique}"
    key = keys.stream_key(stream)
    # one approximate XTRIM stops after 100 macro nodes (10,000 entries): 25,000 need three
    await add_aged(redis_client, key, 25_000, age_ms=8 * DAY_MS)
    removed = await StreamMonitor(redis_client, [stream]).apply_retention(
        stream, RetentionSettings()
    )
    assert removed >= 24_900
    assert await redis_client.xlen(key) <= 100
