"""Events delivered later: deliver_at / delay on publishing, GET and DELETE /v1/scheduled/{id}.

On the shared test Redis every test posts with an API key named for it alone (the owner of
what it keeps) and cancels what it kept before it ends. Tests that need events promoted run
a promoter, which would promote other tests' due items too: they use a private Redis.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio

from riverbed import keys
from riverbed.delay import DelayStore
from riverbed.service import Service
from riverbed.settings import RedisSettings
from riverbed.testing import RedisServer, wait_for
from riverbed_gateway.bootstrap import create_service
from riverbed_gateway.keys import request_idempotency_key
from riverbed_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

STREAM = "email.requested"


def email(to: str = "ada@example.com", **extra: Any) -> dict[str, Any]:
    return {
        "type": "email.requested.v1",
        "data": {"to": to, "subject": "Hi", "text": "Hello"},
        **extra,
    }


def payment(n: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "type": "payment.succeeded.v1",
        "data": {
            "provider": "stripe",
            "provider_payment_id": f"pi_{n}",
            "amount": 100 + n,
            "currency": "EUR",
        },
        **extra,
    }


def rfc3339_ms(moment: datetime) -> str:
    """How the gateway writes a time: UTC, whole ms, a Z."""
    ms = int(moment.timestamp() * 1000)
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{ms % 1000:03d}Z"
    )


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class KeyClient:
    """One API key of a started gateway (configured in GATEWAY_API_KEYS, so its id is
    ``config:<name>``, the owner of what it keeps): posts, looks up and cancels as that key."""

    def __init__(self, http: httpx.AsyncClient, name: str) -> None:
        self.http = http
        self.name = name
        self.owner = f"config:{name}"
        self.auth = {"Authorization": f"Bearer {name}-secret"}
        self.kept: set[tuple[str, str]] = set()  # (stream, event id) to cancel at the end

    async def post(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        response = await self.http.post("/v1/events", json=body, headers={**self.auth, **headers})
        self._remember(response)
        return response

    async def post_batch(self, events: list[dict[str, Any]], **headers: str) -> httpx.Response:
        response = await self.http.post(
            "/v1/events:batch", json={"events": events}, headers={**self.auth, **headers}
        )
        self._remember(response)
        return response

    async def get(self, event_id: str) -> httpx.Response:
        return await self.http.get(f"/v1/scheduled/{event_id}", headers=self.auth)

    async def delete(self, event_id: str) -> httpx.Response:
        return await self.http.delete(f"/v1/scheduled/{event_id}", headers=self.auth)

    def _remember(self, response: httpx.Response) -> None:
        if response.status_code != 202:
            return
        body = response.json()
        for item in body.get("events", [body]):
            if item["entry_id"] is None:
                self.kept.add((item["stream"], item["event_id"]))


def key_config(name: str, scopes: Iterable[str] = ("*",)) -> dict[str, Any]:
    return {"name": name, "key": f"{name}-secret", "scopes": list(scopes)}


@pytest.fixture
async def keyed_gateway(
    start_gateway: Any, redis_client: redis.asyncio.Redis
) -> AsyncIterator[tuple[Service, KeyClient, KeyClient]]:
    """A gateway with two keys of every scope, named for this test; what they kept is
    cancelled at the end."""
    token = uuid.uuid4().hex[:8]
    alice, mallory = f"alice-{token}", f"mallory-{token}"
    service, http = await start_gateway(api_keys=[key_config(alice), key_config(mallory)])
    publishers = (KeyClient(http, alice), KeyClient(http, mallory))
    yield service, *publishers
    for client in publishers:
        for stream, event_id in client.kept:
            await DelayStore(redis_client, stream).cancel(event_id, owner=client.owner)


async def stream_ids(client: redis.asyncio.Redis, stream: str = STREAM) -> list[str]:
    """The event id of every entry of the stream, in order, duplicates kept."""
    entries = await client.xrange(keys.stream_key(stream))
    return [json.loads(fields[b"event"])["id"] for _, fields in entries]


async def waiting_at(client: redis.asyncio.Redis, due: datetime, stream: str = STREAM) -> int:
    """Items of the stream's delay store due at exactly this ms (tests pick a time of their own)."""
    ms = int(due.timestamp() * 1000)
    return int(await client.zcount(keys.delay_key(stream), ms, ms))


def unique_future(days: int = 1) -> datetime:
    """A time in the future no other test will pick to the ms."""
    offset_ms = uuid.uuid4().int % 86_400_000
    return datetime.now(UTC) + timedelta(days=days, milliseconds=offset_ms)


# -- publishing for later -----------------------------------------------------------------


async def test_an_event_with_a_delay_is_kept_and_the_202_says_when(
    keyed_gateway: tuple[Service, KeyClient, KeyClient], redis_client: redis.asyncio.Redis
) -> None:
    _, alice, _ = keyed_gateway
    before = datetime.now(UTC)
    response = await alice.post(email(delay=3600))
    after = datetime.now(UTC)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["entry_id"] is None, "no entry until it is due"
    assert set(accepted) == {"id", "event_id", "type", "stream", "entry_id", "deliver_at"}
    assert accepted["id"] == accepted["event_id"], "no client id: the event id is the id"
    deliver_at = parse(accepted["deliver_at"])
    assert accepted["deliver_at"].endswith("Z")
    hour = timedelta(hours=1)
    assert before + hour - timedelta(milliseconds=1) <= deliver_at <= after + hour
    kept = await DelayStore(redis_client, STREAM).get(accepted["id"], owner=alice.owner)
    assert kept is not None
    assert kept.state == "scheduled"
    assert kept.deliver_at == deliver_at, "the 202 says what the delay store holds"
    assert kept.event is not None
    assert kept.event["data"]["to"] == "ada@example.com"
    assert accepted["id"] not in await stream_ids(redis_client)


async def test_deliver_at_with_an_offset_is_kept_to_the_ms_and_answered_in_utc(
    keyed_gateway: tuple[Service, KeyClient, KeyClient], redis_client: redis.asyncio.Redis
) -> None:
    _, alice, _ = keyed_gateway
    due = unique_future().astimezone(timezone_plus_five_thirty())
    response = await alice.post(email(deliver_at=due.isoformat()))
    assert response.status_code == 202, response.text
    assert response.json()["deliver_at"] == rfc3339_ms(due)
    assert await waiting_at(redis_client, due) == 1


def timezone_plus_five_thirty() -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=5, minutes=30))


@pytest.mark.parametrize(
    "timing",
    [{"delay": 0}, {"deliver_at": "2001-02-03T04:05:06+02:00"}],
    ids=["delay-0", "deliver-at-in-the-past"],
)
async def test_a_time_not_in_the_future_means_now(
    keyed_gateway: tuple[Service, KeyClient, KeyClient],
    redis_client: redis.asyncio.Redis,
    timing: dict[str, Any],
) -> None:
    _, alice, _ = keyed_gateway
    before = datetime.now(UTC)
    response = await alice.post(email(**timing))
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["entry_id"] is not None
    assert parse(accepted["deliver_at"]) >= before - timedelta(milliseconds=1)
    [(_, fields)] = await redis_client.xrange(
        keys.stream_key(STREAM), accepted["entry_id"], accepted["entry_id"]
    )
    assert json.loads(fields[b"event"])["id"] == accepted["id"]


async def test_deliver_at_and_delay_together_are_422_naming_both(
    keyed_gateway: tuple[Service, KeyClient, KeyClient],
) -> None:
    _, alice, _ = keyed_gateway
    both = email(delay=60, deliver_at=unique_future().isoformat())
    response = await alice.post_batch([email(), both])
    assert response.status_code == 422
    problem = response.json()
    assert "deliver_at" in problem["detail"]
    assert "delay" in problem["detail"]
    assert {tuple(e["loc"]) for e in problem["errors"]} == {
        ("events", 1, "deliver_at"),
        ("events", 1, "delay"),
    }
    assert not alice.kept


@pytest.mark.parametrize(
    "timing",
    [{"delay": 61}, {"deliver_at": "2999-01-01T00:00:00Z"}, {"delay": 1e300}],
    ids=["delay", "deliver-at", "huge-delay"],
)
async def test_further_ahead_than_the_limit_is_422_saying_the_limit(
    start_gateway: Any, timing: dict[str, Any]
) -> None:
    _, http = await start_gateway(max_delay_s=60)
    response = await http.post("/v1/events", json=email(**timing))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert "at most 60 s" in problem["detail"]
    assert "GATEWAY_MAX_DELAY_S" in problem["detail"]
    assert problem["max_delay_s"] == 60
    [error] = problem["errors"]
    assert error["loc"] == [next(iter(timing))]


@pytest.mark.parametrize(
    ("timing", "says"),
    [
        ({"delay": -1}, "greater than or equal to 0"),
        ({"delay": "60"}, "valid number"),
        ({"delay": True}, "valid number"),
        ({"deliver_at": 1_900_000_000}, "RFC 3339"),
        ({"deliver_at": "2030-01-01T00:00:00"}, "with an offset"),
        ({"deliver_at": "2030-01-01 00:00:00Z"}, "RFC 3339"),
        ({"deliver_at": "1900000000"}, "RFC 3339"),
    ],
    ids=["negative", "string-delay", "boolean", "unix-number", "no-offset", "space", "digits"],
)
async def test_a_malformed_delivery_time_is_422(
    gateway: tuple[Service, httpx.AsyncClient], timing: dict[str, Any], says: str
) -> None:
    _, http = gateway
    response = await http.post("/v1/events", json=email(**timing))
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["loc"] == [next(iter(timing))]
    assert says in error["msg"]


async def test_a_batch_publishes_what_is_due_now_and_keeps_the_rest(
    keyed_gateway: tuple[Service, KeyClient, KeyClient], redis_client: redis.asyncio.Redis
) -> None:
    _, alice, _ = keyed_gateway
    tomorrow, next_week = unique_future(days=1), unique_future(days=7)
    events = [
        email("now@example.com"),
        email("tomorrow@example.com", deliver_at=tomorrow.isoformat()),
        payment(1, deliver_at=tomorrow.isoformat()),
        email("next-week@example.com", deliver_at=next_week.isoformat()),
        payment(2, delay=0),
    ]
    before = datetime.now(UTC)
    response = await alice.post_batch(events)
    assert response.status_code == 202, response.text
    accepted = response.json()["events"]
    assert [item["entry_id"] is None for item in accepted] == [False, True, True, True, False]
    for index in (0, 4):
        assert parse(accepted[index]["deliver_at"]) >= before - timedelta(milliseconds=1)
    assert [accepted[i]["deliver_at"] for i in (1, 2, 3)] == [
        rfc3339_ms(tomorrow),
        rfc3339_ms(tomorrow),
        rfc3339_ms(next_week),
    ]
    assert accepted[2]["stream"] == "payment.succeeded"
    assert await waiting_at(redis_client, tomorrow) == 1
    assert await waiting_at(redis_client, tomorrow, "payment.succeeded") == 1
    assert await waiting_at(redis_client, next_week) == 1
    on_stream = await stream_ids(redis_client)
    assert accepted[0]["id"] in on_stream
    assert accepted[1]["id"] not in on_stream


async def test_a_replayed_idempotency_key_answers_the_same_and_keeps_nothing_twice(
    keyed_gateway: tuple[Service, KeyClient, KeyClient], redis_client: redis.asyncio.Redis
) -> None:
    _, alice, _ = keyed_gateway
    due = unique_future()
    events = [email(deliver_at=due.isoformat()), email("b@example.com", delay=3600), email()]
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    first = await alice.post_batch(events, **headers)
    assert first.status_code == 202, first.text
    length = await redis_client.xlen(keys.stream_key(STREAM))

    again = await alice.post_batch(events, **headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await waiting_at(redis_client, due) == 1
    assert first.json()["events"][2]["id"] not in (await stream_ids(redis_client))[length:]

    # past the idempotency window the same request derives the same ids: the delay store
    # keeps each once and the answer gives the time they wait for (the relative delay too)
    await redis_client.delete(request_idempotency_key(alice.owner, headers["Idempotency-Key"]))
    late = await alice.post_batch(events, **headers)
    assert "idempotent-replayed" not in late.headers
    first_items, late_items = first.json()["events"], late.json()["events"]
    assert late_items[:2] == first_items[:2]
    assert late_items[2]["id"] == first_items[2]["id"], "the event due now is the same event"
    assert await waiting_at(redis_client, due) == 1
    kept = await DelayStore(redis_client, STREAM).get(first_items[1]["id"], owner=alice.owner)
    assert kept is not None
    assert kept.deliver_at is not None
    assert rfc3339_ms(kept.deliver_at) == first_items[1]["deliver_at"]


async def test_a_single_event_with_an_id_and_a_delay_dedups_without_the_header(
    keyed_gateway: tuple[Service, KeyClient, KeyClient], redis_client: redis.asyncio.Redis
) -> None:
    _, alice, _ = keyed_gateway
    due = unique_future()
    event = email(id=f"client-{uuid.uuid4().hex}", deliver_at=due.isoformat())
    first = await alice.post(event)
    again = await alice.post(event)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert await waiting_at(redis_client, due) == 1


# -- looking up and cancelling --------------------------------------------------------------


async def test_its_publisher_looks_up_and_cancels_a_delayed_event(
    keyed_gateway: tuple[Service, KeyClient, KeyClient], redis_client: redis.asyncio.Redis
) -> None:
    _, alice, _ = keyed_gateway
    due = unique_future()
    accepted = (await alice.post(payment(7, deliver_at=due.isoformat()))).json()

    found = await alice.get(accepted["id"])
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["id"] == accepted["id"]
    assert body["stream"] == "payment.succeeded"
    assert body["state"] == "scheduled"
    assert body["deliver_at"] == accepted["deliver_at"] == rfc3339_ms(due)
    assert body["event"]["id"] == accepted["id"]
    assert body["event"]["data"]["provider_payment_id"] == "pi_7"

    assert (await alice.delete(accepted["id"])).status_code == 204
    assert await waiting_at(redis_client, due, "payment.succeeded") == 0
    for answer in (await alice.get(accepted["id"]), await alice.delete(accepted["id"])):
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/problem+json"


async def test_another_key_neither_sees_nor_cancels_it(
    keyed_gateway: tuple[Service, KeyClient, KeyClient], redis_client: redis.asyncio.Redis
) -> None:
    _, alice, mallory = keyed_gateway
    due = unique_future()
    accepted = (await alice.post(email(deliver_at=due.isoformat()))).json()
    unknown_id = str(uuid.uuid4())
    unknown = (await mallory.get(unknown_id)).json()
    for answer in (await mallory.get(accepted["id"]), await mallory.delete(accepted["id"])):
        assert answer.status_code == 404
        assert answer.json() == {
            **unknown,
            "detail": unknown["detail"].replace(unknown_id, accepted["id"]),
        }, "answered exactly as an unknown id"
    assert await waiting_at(redis_client, due) == 1
    assert (await alice.get(accepted["id"])).status_code == 200


async def test_a_key_sees_only_types_its_scopes_allow(
    start_gateway: Any, redis_client: redis.asyncio.Redis
) -> None:
    name = f"narrowed-{uuid.uuid4().hex[:8]}"
    _, wide = await start_gateway(api_keys=[key_config(name)])
    _, narrow = await start_gateway(api_keys=[key_config(name, ["payment.*"])])
    due = unique_future()
    publisher = KeyClient(wide, name)
    accepted = (await publisher.post(email(deliver_at=due.isoformat()))).json()
    try:
        narrowed = KeyClient(narrow, name)  # the same key name, its scopes narrowed since
        assert (await narrowed.get(accepted["id"])).status_code == 404
        assert (await narrowed.delete(accepted["id"])).status_code == 404
        assert await waiting_at(redis_client, due) == 1
        assert (await publisher.get(accepted["id"])).status_code == 200
    finally:
        await DelayStore(redis_client, STREAM).cancel(accepted["id"], owner=f"config:{name}")


async def test_without_a_valid_key_it_is_401(
    gateway: tuple[Service, httpx.AsyncClient],
) -> None:
    _, http = gateway
    for method in ("GET", "DELETE"):
        for auth in ("", "Bearer nope"):
            response = await http.request(
                method, f"/v1/scheduled/{uuid.uuid4()}", headers={"Authorization": auth}
            )
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"


# -- promotion (a private Redis: promoting would move other tests' due items) -------------


@pytest.fixture
async def private_gateway(
    own_redis: RedisServer,
) -> AsyncIterator[tuple[Service, httpx.AsyncClient, redis.asyncio.Redis]]:
    """A gateway on a Redis of its own, keys alice and mallory, and a client of that Redis."""
    service = create_service(
        GatewaySettings(api_keys=[key_config("alice"), key_config("mallory")]),
        redis_settings=RedisSettings(url=own_redis.url),
    )
    await service.start()
    client = redis.asyncio.Redis.from_url(own_redis.url)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://g")
    try:
        yield service, http, client
    finally:
        await http.aclose()
        await client.aclose()
        await service.stop()


async def promote_everything_due(client: redis.asyncio.Redis, stream: str = STREAM) -> None:
    """Promote due items in small batches until none is left, as a consumer's promoter does."""
    store = DelayStore(client, stream)
    for _ in range(100_000):  # a bound, never reached: each batch promotes or ends the loop
        if not (await store.promote_due(batch=5)).promoted:
            return
        await asyncio.sleep(0)  # let the requests racing it run between batches


async def wait_until(moment_ms: int) -> None:
    await wait_for(lambda: time.time() * 1000 > moment_ms, timeout=10, what="the events' time")


async def test_once_promoted_its_owner_sees_promoted_and_a_cancel_is_409(
    private_gateway: tuple[Service, httpx.AsyncClient, redis.asyncio.Redis],
) -> None:
    _, http, client = private_gateway
    alice, mallory = KeyClient(http, "alice"), KeyClient(http, "mallory")
    accepted = (await alice.post(email(delay=0.2))).json()
    await wait_until(int(parse(accepted["deliver_at"]).timestamp() * 1000))
    await promote_everything_due(client)
    assert await stream_ids(client) == [accepted["id"]]

    found = await alice.get(accepted["id"])
    assert found.status_code == 200
    assert found.json() == {
        "id": accepted["id"],
        "event_id": accepted["id"],
        "stream": STREAM,
        "state": "promoted",
        "deliver_at": None,
        "event": None,
    }
    too_late = await alice.delete(accepted["id"])
    assert too_late.status_code == 409
    assert too_late.headers["content-type"] == "application/problem+json"
    assert "already delivered" in too_late.json()["detail"]
    # another key learns nothing, not even that it was delivered
    assert (await mallory.get(accepted["id"])).status_code == 404
    assert (await mallory.delete(accepted["id"])).status_code == 404
    assert await stream_ids(client) == [accepted["id"]], "a 409 changes nothing"


async def test_cancels_racing_promotion_cancel_or_deliver_exactly_once(
    private_gateway: tuple[Service, httpx.AsyncClient, redis.asyncio.Redis],
) -> None:
    _, http, client = private_gateway
    alice = KeyClient(http, "alice")
    total = 300
    due = datetime.now(UTC) + timedelta(seconds=1)  # the batch is kept well before
    response = await alice.post_batch(
        [email(f"r{i}@example.com", deliver_at=due.isoformat()) for i in range(total)]
    )
    assert response.status_code == 202, response.text
    ids = [item["id"] for item in response.json()["events"]]
    assert await stream_ids(client) == []
    await wait_until(int(due.timestamp() * 1000))  # all due now, none promoted yet

    async def cancel_all() -> dict[str, int]:
        # the promoter takes equal due times in member order: cancelling from the other end
        # makes the two meet in the middle
        answers: dict[str, int] = {}
        for event_id in sorted(ids, reverse=True):
            answers[event_id] = (await alice.delete(event_id)).status_code
        return answers

    _, answers = await asyncio.gather(promote_everything_due(client), cancel_all())
    await promote_everything_due(client)  # whatever was left: nothing, if all was answered

    cancelled = {i for i, status in answers.items() if status == 204}
    too_late = {i for i, status in answers.items() if status == 409}
    assert cancelled | too_late == set(ids), f"only 204 and 409: {set(answers.values())}"
    assert cancelled, "the race must have gone both ways: some cancelled"
    assert too_late, "the race must have gone both ways: some delivered"
    delivered = await stream_ids(client)
    assert len(delivered) == len(set(delivered)), "nothing delivered twice"
    assert set(delivered) == too_late, "delivered exactly the ones DELETE answered 409 for"
    assert await DelayStore(client, STREAM).waiting() == (0, 0, None)
    for event_id in list(cancelled)[:5] + list(too_late)[:5]:
        state = await alice.get(event_id)
        if event_id in cancelled:
            assert state.status_code == 404
        else:
            assert state.json()["state"] == "promoted"


# -- the document ---------------------------------------------------------------------------


async def test_the_openapi_document_describes_delivery_times_and_both_routes(
    gateway: tuple[Service, httpx.AsyncClient],
) -> None:
    _, http = gateway
    document = (await http.get("/openapi.json")).json()
    single = document["paths"]["/v1/events"]["post"]
    posted = single["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert "seconds" in posted["delay"]["description"]
    assert {"number"} <= {v.get("type") for v in posted["delay"]["anyOf"]}
    assert any(v.get("format") == "date-time" for v in posted["deliver_at"]["anyOf"])
    accepted = document["components"]["schemas"]["Accepted"]
    assert {"type": "null"} in accepted["properties"]["entry_id"]["anyOf"]
    assert accepted["properties"]["deliver_at"]["format"] == "date-time"
    assert "deliver_at" in accepted["required"]
    scheduled = document["paths"]["/v1/scheduled/{event_id}"]
    assert set(scheduled["get"]["responses"]) == {"200", "401", "404", "503"}
    assert set(scheduled["delete"]["responses"]) == {"204", "401", "404", "409", "503"}
