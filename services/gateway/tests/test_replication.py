"""GATEWAY_MIN_REPLICAS: a 202 only once replicas acknowledged the appends (Redis WAIT on
the connection that appended); fewer in time is a 503 that says the events may still be
delivered, and frees the Idempotency-Key for the retry.

A private primary (``own_redis``) and, for the acknowledged case, a replica of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio

from riverbed import keys
from riverbed.settings import RedisSettings
from riverbed.testing import RedisServer, wait_for
from riverbed_gateway.adapters.replication import ReplicationUnsupported, replication_of
from riverbed_gateway.bootstrap import create_service
from riverbed_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

STREAM_KEY = keys.stream_key("email.requested")


def email(**extra: Any) -> dict[str, Any]:
    data = {"to": "ada@example.com", "subject": "Hi", "text": "Hello"}
    return {"type": "email.requested.v1", "data": data, **extra}


@asynccontextmanager
async def gateway_on(url: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    service = create_service(
        GatewaySettings(local_api_key="test-key", log_format="json", **overrides),
        redis_settings=RedisSettings(url=url),
    )
    await service.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.app),
            base_url="http://gateway",
            headers={"Authorization": "Bearer test-key"},
        ) as http:
            yield http
    finally:
        await service.stop()


@pytest.fixture
def replica(own_redis: RedisServer, tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / "replica"
    directory.mkdir()
    server = RedisServer(directory, extra_config={"replicaof": f"127.0.0.1 {own_redis.port}"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_too_few_replicas_in_time_is_503_saying_the_event_may_still_be_delivered(
    own_redis: RedisServer,
) -> None:
    async with gateway_on(own_redis.url, min_replicas=1, replication_timeout_ms=50) as http:
        headers = {"Idempotency-Key": "order-7"}
        refused = await http.post("/v1/events", json=email(), headers=headers)
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"] == "5"
        problem = refused.json()
        assert "0 of the 1 Redis replicas required (GATEWAY_MIN_REPLICAS)" in problem["detail"]
        assert "may still be delivered" in problem["detail"]
        assert "same Idempotency-Key" in problem["detail"]
        primary = redis.asyncio.Redis.from_url(own_redis.url)
        try:
            assert await primary.xlen(STREAM_KEY) == 1  # appended, not vouched for
            # the key was freed: the retry is tried again (not 409 in flight, not a replay)
            again = await http.post("/v1/events", json=email(), headers=headers)
            assert again.status_code == 503
            assert "idempotent-replayed" not in again.headers
        finally:
            await primary.aclose()


async def test_with_a_replica_acknowledging_every_kind_of_append_is_202(
    own_redis: RedisServer, replica: RedisServer
) -> None:
    replica_client = redis.asyncio.Redis.from_url(replica.url)

    async def linked() -> bool:
        return (await replica_client.info("replication"))["master_link_status"] == "up"

    try:
        await wait_for(linked, what="the replica's link to the primary")
        async with gateway_on(own_redis.url, min_replicas=1, replication_timeout_ms=5_000) as http:
            later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            single = await http.post("/v1/events", json=email())
            batch = await http.post("/v1/events:batch", json={"events": [email(), email()]})
            kept = await http.post("/v1/events", json=email(deliver_at=later))
            assert [single.status_code, batch.status_code, kept.status_code] == [202] * 3
            # WAIT returned: the replica already holds the three appended now
            assert await replica_client.xlen(STREAM_KEY) == 3
    finally:
        await replica_client.aclose()


def test_min_replicas_on_a_redis_cluster_is_refused_at_start_up() -> None:
    settings = GatewaySettings(min_replicas=1)
    with pytest.raises(ReplicationUnsupported, match="not supported with REDIS_CLUSTER"):
        replication_of(settings, RedisSettings(cluster=True))
    assert replication_of(GatewaySettings(), RedisSettings(cluster=True)) is None
