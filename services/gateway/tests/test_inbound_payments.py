"""POST /v1/inbound/payments/{provider} against a real Redis: signatures, dedup, mapping.

Signatures are built here with ``hmac`` from Stripe's published scheme, independently of
the gateway's verifier. The client sends no API key: the signature is the authentication.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError

from riverbed import keys
from riverbed.publisher import Publisher
from riverbed.service import Service
from riverbed_gateway.keys import inbound_event_key

pytestmark = pytest.mark.integration

SECRET = "whsec_current_0123456789"
OLD_SECRET = "whsec_previous_9876543210"
URL = "/v1/inbound/payments/stripe"
CREATED = 1_718_000_000  # unix s: 2024-06-10T06:13:20Z


def signature(body: bytes, secret: str, timestamp: int) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(body: bytes, *secrets: str, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t}," + ",".join(f"v1={signature(body, secret, t)}" for secret in secrets)


def provider_event(event_type: str, data_object: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": event_type,
        "created": CREATED,
        "livemode": False,
        "data": {"object": data_object},
        **extra,
    }


def payment_intent(**fields: Any) -> dict[str, Any]:
    return {
        "id": f"pi_{uuid.uuid4().hex[:12]}",
        "object": "payment_intent",
        "amount": 1999,
        "amount_received": 1999,
        "currency": "eur",
        "customer": "cus_Q1",
        "description": "order 77",
        "metadata": {"order_id": "77"},
        "status": "succeeded",
        **fields,
    }


def succeeded(**fields: Any) -> dict[str, Any]:
    return provider_event("payment_intent.succeeded", payment_intent(**fields))


class Inbound:
    """A gateway configured for Stripe, and a client that posts signed deliveries."""

    def __init__(self, service: Service, http: httpx.AsyncClient) -> None:
        self.service = service
        self.http = http

    async def post(
        self,
        document: dict[str, Any] | bytes,
        *secrets: str,
        timestamp: int | None = None,
        url: str = URL,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        sent = {"Content-Type": "application/json; charset=utf-8"}
        if secrets:
            sent["Stripe-Signature"] = signature_header(body, *secrets, timestamp=timestamp)
        sent.update(headers or {})
        return await self.http.post(url, content=body, headers=sent)

    async def outcomes(self, outcome: str, provider: str = "stripe") -> float:
        """riverbed_gateway_inbound_total{provider, outcome}, read through a real parser."""
        text = (await self.http.get("/metrics")).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "riverbed_gateway_inbound_total" and sample.labels == {
                    "provider": provider,
                    "outcome": outcome,
                }:
                    return float(sample.value)
        return 0.0


async def _inbound(start_gateway: Any, **settings: Any) -> AsyncIterator[Inbound]:
    service, _ = await start_gateway(**settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app), base_url="http://gateway"
    ) as http:  # no Authorization header
        yield Inbound(service, http)


@pytest.fixture
async def inbound(start_gateway: Any) -> AsyncIterator[Inbound]:
    async for gateway in _inbound(start_gateway, inbound_secrets={"stripe": [SECRET]}):
        yield gateway


@pytest.fixture
async def rotating(start_gateway: Any) -> AsyncIterator[Inbound]:
    """Stripe during a secret rotation: the gateway holds the new and the old secret."""
    async for gateway in _inbound(start_gateway, inbound_secrets={"stripe": [SECRET, OLD_SECRET]}):
        yield gateway


async def stored_event(
    redis_client: redis.asyncio.Redis, stream: str, entry_id: str
) -> dict[str, Any]:
    entries: Any = await redis_client.xrange(keys.stream_key(stream), entry_id, entry_id)
    [(_, fields)] = entries
    document: dict[str, Any] = json.loads(fields[b"event"])
    return document


async def length(redis_client: redis.asyncio.Redis, stream: str) -> int:
    return int(await redis_client.xlen(keys.stream_key(stream)))


# -- signature ------------------------------------------------------------------------


async def test_a_signed_payment_intent_succeeded_is_published_as_payment_succeeded(
    inbound: Inbound, redis_client: redis.asyncio.Redis
) -> None:
    event = succeeded(amount=2500, amount_received=1999)  # a partial capture: 1999 were taken
    intent = event["data"]["object"]
    response = await inbound.post(event, SECRET, headers={"X-Request-Id": "req-inbound-1"})

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["type"] == "payment.succeeded.v1"
    assert accepted["stream"] == "payment.succeeded"
    stored = await stored_event(redis_client, "payment.succeeded", accepted["entry_id"])
    assert stored["id"] == accepted["id"]
    assert stored["type"] == "payment.succeeded.v1"
    assert stored["source"] == "urn:riverbed:inbound:stripe"
    assert stored["subject"] == intent["id"]
    assert stored["correlationid"] == "req-inbound-1"
    assert stored["time"].startswith("2024-06-10T06:13:20")
    assert stored["data"] == {
        "provider": "stripe",
        "provider_payment_id": intent["id"],
        "amount": 1999,
        "currency": "EUR",
        "occurred_at": "2024-06-10T06:13:20Z",
        "customer_id": "cus_Q1",
        "description": "order 77",
        "metadata": {"order_id": "77"},
    }


async def test_any_v1_signature_may_match(
    inbound: Inbound, redis_client: redis.asyncio.Redis
) -> None:
    """Stripe signs with the old and the new secret during a rotation: one match is enough."""
    body = json.dumps(succeeded()).encode()
    now = int(time.time())
    header = f"t={now},v1={signature(body, OLD_SECRET, now)},v1={signature(body, SECRET, now)}"
    response = await inbound.post(body, headers={"Stripe-Signature": header})
    assert response.status_code == 202, response.text


async def test_every_configured_secret_verifies_during_a_rotation(rotating: Inbound) -> None:
    signed_with_old = await rotating.post(succeeded(), OLD_SECRET)
    signed_with_new = await rotating.post(succeeded(), SECRET)
    assert signed_with_old.status_code == 202, signed_with_old.text
    assert signed_with_new.status_code == 202, signed_with_new.text


async def test_a_wrong_signature_is_400_and_nothing_is_published(
    inbound: Inbound, redis_client: redis.asyncio.Redis
) -> None:
    before = await length(redis_client, "payment.succeeded")
    refused_before = await inbound.outcomes("signature-mismatch")

    wrong_secret = await inbound.post(succeeded(), "whsec_someone_else")
    body = json.dumps(succeeded()).encode()
    tampered = await inbound.post(
        body.replace(b"1999", b"9999"),
        headers={"Stripe-Signature": signature_header(body, SECRET)},
    )

    for response in (wrong_secret, tampered):
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("/signature-mismatch")
    assert await length(redis_client, "payment.succeeded") == before
    assert await inbound.outcomes("signature-mismatch") == refused_before + 2


@pytest.mark.parametrize(
    "seconds", [-3600, -301, 301, 3600], ids=["1h-ago", "301s-ago", "301s-ahead", "1h-ahead"]
)
async def test_a_timestamp_outside_the_tolerance_is_400_stale(
    inbound: Inbound, redis_client: redis.asyncio.Redis, seconds: int
) -> None:
    before = await length(redis_client, "payment.succeeded")
    response = await inbound.post(succeeded(), SECRET, timestamp=int(time.time()) + seconds)
    assert response.status_code == 400
    assert response.json()["type"].endswith("/signature-stale")
    assert "300 s" in response.json()["detail"]
    assert await length(redis_client, "payment.succeeded") == before


async def test_a_timestamp_within_the_tolerance_is_accepted(inbound: Inbound) -> None:
    response = await inbound.post(succeeded(), SECRET, timestamp=int(time.time()) - 240)
    assert response.status_code == 202, response.text


async def test_a_missing_signature_header_is_400_and_nothing_is_published(
    inbound: Inbound, redis_client: redis.asyncio.Redis
) -> None:
    before = await length(redis_client, "payment.succeeded")
    response = await inbound.post(succeeded())
    assert response.status_code == 400
    assert response.json()["type"].endswith("/signature-missing")
    assert await length(redis_client, "payment.succeeded") == before


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "t=,v1={sig}",
        "t=yesterday,v1={sig}",
        "t={t}",
        "v1={sig}",
        "t={t},t={t},v1={sig}",
        "t={t},v1=not-hex",
        "t={t},v1={sig}deadbeef",
        "t={t},,v1={sig}",
        "t={t},v0={sig}",
    ],
)
async def test_a_garbled_signature_header_is_400_and_nothing_is_published(
    inbound: Inbound, redis_client: redis.asyncio.Redis, header: str
) -> None:
    body = json.dumps(succeeded()).encode()
    now = int(time.time())
    garbled = header.format(t=now, sig=signature(body, SECRET, now))
    before = await length(redis_client, "payment.succeeded")
    response = await inbound.post(body, headers={"Stripe-Signature": garbled})
    assert response.status_code == 400, response.text
    assert response.json()["type"].endswith("/signature-malformed")
    assert await length(redis_client, "payment.succeeded") == before


async def test_the_body_is_read_with_the_events_api_rules(start_gateway: Any) -> None:
    async for gateway in _inbound(
        start_gateway, inbound_secrets={"stripe": [SECRET]}, max_body_bytes=2048
    ):
        too_large = await gateway.post(succeeded(description="x" * 4096), SECRET)
        not_json = await gateway.post(b'{"id": ', SECRET)
        plain = await gateway.post(succeeded(), SECRET, headers={"Content-Type": "text/plain"})
        assert too_large.status_code == 413
        assert not_json.status_code == 400
        assert plain.status_code == 415


# -- providers and dedup --------------------------------------------------------------


async def test_an_unknown_provider_is_a_plain_404_as_any_unknown_path(inbound: Inbound) -> None:
    """An unauthenticated caller does not learn which providers are configured (the answer
    named them before)."""
    response = await inbound.post(succeeded(), SECRET, url="/v1/inbound/payments/paypal")
    nowhere = await inbound.post(succeeded(), SECRET, url="/v1/nowhere/paypal")
    assert response.status_code == nowhere.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == nowhere.json()
    assert "stripe" not in response.text


async def test_a_signed_event_created_past_year_9999_is_400_not_500(
    inbound: Inbound, redis_client: redis.asyncio.Redis
) -> None:
    """253402300800 is 10000-01-01T00:00:00Z: no datetime holds it (it was a 500 and a
    reset connection)."""
    before = await length(redis_client, "payment.succeeded")
    for created in (253_402_300_800, 999_999_999_999):
        response = await inbound.post({**succeeded(), "created": created}, SECRET)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"].endswith("/provider-time-out-of-range")
        assert "9999-12-31T23:59:59Z" in problem["detail"]
    last = await inbound.post({**succeeded(), "created": 253_402_300_799}, SECRET)
    assert last.status_code == 202, last.text
    assert await length(redis_client, "payment.succeeded") == before + 1


async def test_a_replayed_provider_event_is_200_duplicate_and_published_once(
    inbound: Inbound, redis_client: redis.asyncio.Redis
) -> None:
    event = succeeded()
    before = await length(redis_client, "payment.succeeded")
    first = await inbound.post(event, SECRET)
    again = await inbound.post(event, SECRET)  # freshly signed, as a provider's retry is

    assert first.status_code == 202, first.text
    assert again.status_code == 200, again.text
    assert again.json() == {
        "status": "duplicate",
        "id": first.json()["id"],
        "provider_event_id": event["id"],
    }
    assert await length(redis_client, "payment.succeeded") == before + 1
    ttl = await redis_client.ttl(inbound_event_key("stripe", event["id"]))
    assert 23 * 3600 < ttl <= 24 * 3600, "the marker lasts the idempotency window"


async def test_a_republished_provider_event_keeps_its_event_id(
    inbound: Inbound, redis_client: redis.asyncio.Redis
) -> None:
    """After the marker is gone (expired, or a crash before it was written), the provider's
    retry publishes again, under the same id: consumers' idempotency absorbs it."""
    event = succeeded()
    first = await inbound.post(event, SECRET)
    await redis_client.delete(inbound_event_key("stripe", event["id"]))
    second = await inbound.post(event, SECRET)
    assert first.status_code == second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["entry_id"] != first.json()["entry_id"]


async def test_a_failed_publish_releases_the_marker_so_the_retry_succeeds(
    inbound: Inbound, redis_client: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = succeeded()

    async def redis_gone(self: Publisher, *args: Any, **kwargs: Any) -> str:
        raise RedisConnectionError("connection lost")

    errors = await inbound.outcomes("error")
    with monkeypatch.context() as patch:
        patch.setattr(Publisher, "publish", redis_gone)
        failed = await inbound.post(event, SECRET)
    assert failed.status_code == 503, "a provider retries a 5xx"
    assert await inbound.outcomes("error") == errors + 1
    assert await redis_client.exists(inbound_event_key("stripe", event["id"])) == 0

    retry = await inbound.post(event, SECRET)
    assert retry.status_code == 202, retry.text


async def test_a_twin_delivery_while_the_first_is_publishing_is_409(
    inbound: Inbound, redis_client: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = succeeded()
    publish = Publisher.publish
    twins: list[httpx.Response] = []

    async def publish_after_a_twin(self: Publisher, *args: Any, **kwargs: Any) -> str:
        if not twins:
            twins.append(await inbound.post(event, SECRET))
        return await publish(self, *args, **kwargs)

    monkeypatch.setattr(Publisher, "publish", publish_after_a_twin)
    before = await length(redis_client, "payment.succeeded")
    first = await inbound.post(event, SECRET)

    assert first.status_code == 202, first.text
    assert [twin.status_code for twin in twins] == [409]
    assert twins[0].headers["retry-after"] == "1"
    assert await length(redis_client, "payment.succeeded") == before + 1


async def test_an_unmapped_event_type_is_200_ignored_and_counted(
    inbound: Inbound, redis_client: redis.asyncio.Redis
) -> None:
    ignored_before = await inbound.outcomes("ignored")
    lengths = {s: await length(redis_client, s) for s in ("payment.succeeded", "payment.failed")}
    event = provider_event("customer.created", {"id": "cus_Q1", "object": "customer"})

    response = await inbound.post(event, SECRET)

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ignored", "type": "customer.created"}
    assert await inbound.outcomes("ignored") == ignored_before + 1
    assert {s: await length(redis_client, s) for s in lengths} == lengths
    assert await redis_client.exists(inbound_event_key("stripe", event["id"])) == 0


async def test_outcomes_are_counted_per_provider(inbound: Inbound) -> None:
    accepted = await inbound.outcomes("accepted")
    duplicate = await inbound.outcomes("duplicate")
    event = succeeded()
    await inbound.post(event, SECRET)
    await inbound.post(event, SECRET)
    assert await inbound.outcomes("accepted") == accepted + 1
    assert await inbound.outcomes("duplicate") == duplicate + 1


async def test_backpressure_is_503_and_leaves_no_marker(own_redis: Any) -> None:
    from riverbed.settings import RedisSettings
    from riverbed_gateway.bootstrap import create_service
    from riverbed_gateway.settings import GatewaySettings

    service = create_service(
        GatewaySettings(inbound_secrets={"stripe": [SECRET]}, max_unhandled_events=1),
        redis_settings=RedisSettings(url=own_redis.url),
    )
    await service.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.app), base_url="http://gateway"
        ) as http:
            gateway = Inbound(service, http)
            # a consumer group that has read nothing: 2 events behind, past the ceiling of 1
            await service.redis.xgroup_create(
                keys.stream_key("payment.succeeded"), "payments", id="0", mkstream=True
            )
            for _ in range(2):
                assert (await gateway.post(succeeded(), SECRET)).status_code == 202
            await service.container.backpressure.sample_now("payment.succeeded")
            event = succeeded()
            refused = await gateway.post(event, SECRET)
            assert refused.status_code == 503
            assert "retry-after" in refused.headers
            assert await service.redis.exists(inbound_event_key("stripe", event["id"])) == 0
    finally:
        await service.stop()


# -- mapping --------------------------------------------------------------------------


async def test_a_failed_payment_intent_becomes_payment_failed(
    inbound: Inbound, redis_client: redis.asyncio.Redis
) -> None:
    intent = payment_intent(
        amount=5000,
        amount_received=0,
        currency="usd",
        status="requires_payment_method",
        last_payment_error={
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
        },
    )
    response = await inbound.post(provider_event("payment_intent.payment_failed", intent), SECRET)

    assert response.status_code == 202, response.text
    assert response.json()["type"] == "payment.failed.v1"
    stored = await stored_event(redis_client, "payment.failed", response.json()["entry_id"])
    assert stored["data"] == {
        "provider": "stripe",
        "provider_payment_id": intent["id"],
        "amount": 5000,
        "currency": "USD",
        "occurred_at": "2024-06-10T06:13:20Z",
        "failure_code": "card_declined",
        "failure_message": "Your card has insufficient funds.",
    }


async def test_a_refunded_charge_becomes_payment_refunded_of_its_newest_refund(
    inbound: Inbound, redis_client: redis.asyncio.Redis
) -> None:
    charge = {
        "id": "ch_3P1x",
        "object": "charge",
        "amount": 1999,
        "amount_refunded": 800,
        "currency": "eur",
        "payment_intent": "pi_3P1x",
        "refunds": {
            "object": "list",
            "data": [
                {"id": "re_new", "amount": 500, "reason": "requested_by_customer"},
                {"id": "re_old", "amount": 300, "reason": None},
            ],
        },
    }
    response = await inbound.post(provider_event("charge.refunded", charge), SECRET)

    assert response.status_code == 202, response.text
    assert response.json()["type"] == "payment.refunded.v1"
    stored = await stored_event(redis_client, "payment.refunded", response.json()["entry_id"])
    assert stored["subject"] == "pi_3P1x"
    assert stored["data"] == {
        "provider": "stripe",
        "provider_payment_id": "pi_3P1x",
        "amount": 500,
        "currency": "EUR",
        "occurred_at": "2024-06-10T06:13:20Z",
        "provider_refund_id": "re_new",
        "reason": "requested_by_customer",
    }


async def test_a_provider_event_missing_fields_is_422_with_field_errors(
    inbound: Inbound, redis_client: redis.asyncio.Redis
) -> None:
    intent = payment_intent(amount=10.5)
    del intent["currency"]
    event = provider_event("payment_intent.succeeded", intent)
    before = await length(redis_client, "payment.succeeded")

    response = await inbound.post(event, SECRET)

    assert response.status_code == 422
    locations = {tuple(error["loc"]) for error in response.json()["errors"]}
    assert locations == {("data", "object", "amount"), ("data", "object", "currency")}
    assert all("input" not in error for error in response.json()["errors"])
    assert await length(redis_client, "payment.succeeded") == before
    assert await redis_client.exists(inbound_event_key("stripe", event["id"])) == 0


async def test_a_failure_without_any_code_and_an_event_without_id_are_422(
    inbound: Inbound,
) -> None:
    no_code = provider_event(
        "payment_intent.payment_failed", payment_intent(last_payment_error={"message": "?"})
    )
    no_id = succeeded()
    del no_id["id"]

    no_code_response = await inbound.post(no_code, SECRET)
    no_id_response = await inbound.post(no_id, SECRET)

    assert no_code_response.status_code == 422
    assert [e["loc"] for e in no_code_response.json()["errors"]] == [
        ["data", "object", "last_payment_error"]
    ]
    assert no_id_response.status_code == 422
    assert [e["loc"] for e in no_id_response.json()["errors"]] == [["id"]]


@pytest.mark.parametrize(
    "secrets",
    [{"Stripe": [SECRET]}, {"str{pe}": [SECRET]}, {"stripe": []}],
    ids=["uppercase", "braces", "no-secret"],
)
def test_a_misconfigured_provider_is_refused_at_start_up(secrets: dict[str, list[str]]) -> None:
    from riverbed_gateway.bootstrap import create_service
    from riverbed_gateway.settings import GatewaySettings

    with pytest.raises(ValueError, match="inbound provider"):
        create_service(GatewaySettings(inbound_secrets=secrets))
