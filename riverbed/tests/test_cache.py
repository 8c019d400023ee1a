"""Cache: what is refused before any Redis call (TTL, names, codecs), and key layout. No I/O."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio
from pydantic import BaseModel
from redis.crc import key_slot

from riverbed import keys
from riverbed.cache import Cache, JsonCodec, PydanticCodec


class Endpoint(BaseModel):
    id: str
    url: str


@pytest.fixture
async def cache() -> AsyncIterator[Cache]:
    """A cache over a client that never connects: these tests must fail before any I/O."""
    client = redis.asyncio.Redis(host="127.0.0.1", port=1)
    try:
        yield Cache(client)
    finally:
        await client.aclose()


def test_namespace_without_ttl_is_refused_by_the_signature(cache: Cache) -> None:
    with pytest.raises(TypeError, match="required keyword-only argument: 'ttl'"):
        cache.namespace("endpoints")  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "ttl",
    [0, -1, 0.0, 0.0004, -0.5, timedelta(0), timedelta(seconds=-5), timedelta(microseconds=999)],
)
def test_namespace_with_ttl_below_1ms_says_entries_must_expire(cache: Cache, ttl: Any) -> None:
    with pytest.raises(ValueError, match=r"'endpoints'.*not positive.*at least 1 ms"):
        cache.namespace("endpoints", ttl=ttl)


@pytest.mark.parametrize("ttl", [None, "300", True, math.nan, math.inf, [5]])
def test_namespace_with_ttl_that_is_not_a_duration_says_what_is_accepted(
    cache: Cache, ttl: Any
) -> None:
    with pytest.raises(ValueError, match=r"'endpoints'.*not a TTL.*timedelta.*seconds"):
        cache.namespace("endpoints", ttl=ttl)


def test_a_refused_namespace_is_not_defined(cache: Cache) -> None:
    with pytest.raises(ValueError, match="not positive"):
        cache.namespace("endpoints", ttl=0)
    assert cache.namespace("endpoints", ttl=1).ttl == timedelta(seconds=1)


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        (timedelta(minutes=5), timedelta(minutes=5)),
        (300, timedelta(minutes=5)),
        (2.5, timedelta(seconds=2.5)),
        (0.001, timedelta(milliseconds=1)),
    ],
)
def test_ttl_is_a_timedelta_or_seconds(cache: Cache, ttl: Any, expected: timedelta) -> None:
    assert cache.namespace("endpoints", ttl=ttl).ttl == expected


async def test_per_call_ttl_below_1ms_is_refused_before_touching_redis(cache: Cache) -> None:
    namespace = cache.namespace("endpoints", ttl=60)

    async def loader() -> int:
        raise AssertionError("must not load")

    with pytest.raises(ValueError, match="not positive"):
        await namespace.set("a", 1, ttl=0)
    with pytest.raises(ValueError, match="not a TTL"):
        await namespace.get_or_load("a", loader, ttl=math.nan)


@pytest.mark.parametrize("name", ["", "Endpoints", "a{b}", "a:b", "a b", "-a", "x" * 101, None])
def test_namespace_name_must_be_lowercase_dotted_or_dashed(cache: Cache, name: Any) -> None:
    with pytest.raises(ValueError, match=r"namespace name .* is not valid: use 1-100 lowercase"):
        cache.namespace(name, ttl=60)


def test_a_namespace_is_defined_once(cache: Cache) -> None:
    cache.namespace("endpoints", ttl=60)
    with pytest.raises(ValueError, match="'endpoints' is already defined"):
        cache.namespace("endpoints", ttl=60, model=Endpoint)


def test_model_and_codec_together_are_refused(cache: Cache) -> None:
    with pytest.raises(ValueError, match="model= or codec=, not both"):
        cache.namespace(  # type: ignore[call-overload]
            "endpoints", ttl=60, model=Endpoint, codec=PydanticCodec(Endpoint)
        )


def test_codecs_round_trip_and_reject_bad_data_with_value_error() -> None:
    endpoint = Endpoint(id="e1", url="https://example.test/hook")
    by_model = PydanticCodec(Endpoint)
    assert by_model.decode(by_model.encode(endpoint)) == endpoint
    assert by_model.encode(endpoint) == endpoint.model_dump_json().encode()
    optional = PydanticCodec[Endpoint | None](Endpoint | None)
    assert optional.decode(optional.encode(None)) is None
    many = PydanticCodec[list[Endpoint]](list[Endpoint])
    assert many.decode(many.encode([endpoint, endpoint])) == [endpoint, endpoint]
    plain = JsonCodec()
    assert plain.decode(plain.encode({"a": [1, "é", None]})) == {"a": [1, "é", None]}
    for codec in (by_model, plain):
        with pytest.raises(ValueError, match=r"(?i)json|property name"):
            codec.decode(b"{not json")
    with pytest.raises(ValueError, match="url"):
        by_model.decode(b'{"id": "e1"}')


def test_all_keys_of_a_namespace_share_one_cluster_slot() -> None:
    slots = {
        key_slot(name.encode())
        for name in (
            keys.cache_version_key("endpoints"),
            keys.cache_entry_key("endpoints", 7, "user:{42}"),
            keys.cache_lease_key("endpoints", 7, "user:{42}"),
        )
    }
    assert len(slots) == 1
    assert keys.cache_lease_key("endpoints", 7, "k") != keys.cache_entry_key("endpoints", 7, "k")
