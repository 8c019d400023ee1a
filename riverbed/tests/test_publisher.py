"""Publishing: entry ids back, nothing invalid on the wire, batches in one round trip."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio
from prometheus_client import REGISTRY
from pydantic import ValidationError

from riverbed import keys
from riverbed.publisher import Publisher
from riverbed.testing import TEST_TYPE, make_event
from riverbed_contracts import CloudEvent
from riverbed_contracts.registry import UnknownEventType

pytestmark = pytest.mark.integration


async def test_publish_returns_the_entry_id_of_a_cloudevents_entry(
    publisher: Publisher, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"t.{unique}"
    event = make_event(1, subject="order/1")
    entry_id = await publisher.publish(event, stream=stream)
    [(stored_id, fields)] = await redis_client.xrange(keys.stream_key(stream))
    assert stored_id.decode() == entry_id
    assert list(fields) == [b"event"]
    document = json.loads(fields[b"event"])
    assert document["id"] == event.id
    assert document["specversion"] == "1.0"
    assert document["subject"] == "order/1"


async def test_a_batch_keeps_its_order_and_returns_every_id(
    publisher: Publisher, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"t.{unique}"
    events = [make_event(i) for i in range(50)]
    entry_ids = await publisher.publish_many(events, stream=stream)
    stored = await redis_client.xrange(keys.stream_key(stream))
    assert [i.decode() for i, _ in stored] == entry_ids
    assert [json.loads(f[b"event"])["id"] for _, f in stored] == [e.id for e in events]


async def test_an_invalid_event_in_a_batch_means_nothing_is_written(
    publisher: Publisher, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"t.{unique}"
    bad = CloudEvent(type=TEST_TYPE, data={"amount": -5})
    with pytest.raises(ValidationError):
        await publisher.publish_many([make_event(1), bad], stream=stream)
    with pytest.raises(UnknownEventType, match="known types"):
        await publisher.publish(CloudEvent(type="nope.v1", data={}), stream=stream)
    assert await redis_client.exists(keys.stream_key(stream)) == 0


async def test_a_length_cap_trims_the_stream_approximately(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"t.{unique}"
    publisher = Publisher(redis_client, max_length={stream: 100})
    for start in range(0, 1_000, 100):
        await publisher.publish_many(
            [make_event(i) for i in range(start, start + 100)], stream=stream
        )
    length = await redis_client.xlen(keys.stream_key(stream))
    assert 100 <= length < 1_000, "approximate MAXLEN keeps at least the cap, trims the rest"


async def test_publishing_is_counted_by_stream_and_type(publisher: Publisher, unique: str) -> None:
    stream = f"t.{unique}"
    await publisher.publish_many([make_event(i) for i in range(3)], stream=stream)
    await publisher.publish(make_event(9), stream=stream)
    labels = {"stream": stream, "type": TEST_TYPE}
    assert REGISTRY.get_sample_value("riverbed_published_total", labels) == 4


async def test_coalesced_appends_of_one_turn_each_get_their_own_entry(
    redis_client: redis.asyncio.Redis, unique: str
) -> None:
    good, bad = f"t.{unique}", f"t.{unique}.bad"
    await redis_client.set(keys.stream_key(bad), "not a stream")  # every XADD to it fails
    publisher = Publisher(redis_client, routes={"payment.succeeded": good, "email.sent": bad})
    events = [make_event(i) for i in range(20)]
    refused = [CloudEvent(type="email.sent.v1", data={}) for _ in range(3)]
    # one turn: the appends to both streams are asked for before any is sent
    outcomes = await asyncio.gather(
        *(publisher.publish_coalesced(event) for event in events),
        *(publisher.publish_coalesced(event, validated=True) for event in refused),
        return_exceptions=True,
    )
    entry_ids, failures = outcomes[: len(events)], outcomes[len(events) :]
    stored = await redis_client.xrange(keys.stream_key(good))
    assert [entry_id.decode() for entry_id, _ in stored] == entry_ids
    assert [json.loads(fields[b"event"])["id"] for _, fields in stored] == [e.id for e in events]
    assert all(isinstance(failure, redis.ResponseError) for failure in failures), failures
    assert await redis_client.get(keys.stream_key(bad)) == b"not a stream"
