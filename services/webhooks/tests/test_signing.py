"""Signing: secrets and signatures that a third-party Standard Webhooks verifier accepts."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from riverbed_webhooks.domain.model import Endpoint
from riverbed_webhooks.domain.signing import (
    InvalidSecret,
    generate_secret,
    secret_key,
    sign,
    signed_headers,
)

BODY = b'{"id":"evt_1","type":"payment.succeeded.v1","data":{"amount":1999}}'


def test_a_generated_secret_is_whsec_and_base64_of_at_least_24_random_bytes() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 24
    assert generate_secret() != secret


def test_a_signature_is_verified_by_the_standardwebhooks_package() -> None:
    secret = generate_secret()
    now = int(time.time())
    headers = signed_headers([secret], "evt_1", now, BODY)
    assert headers["webhook-id"] == "evt_1"
    assert headers["webhook-timestamp"] == str(now)
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers)["id"] == "evt_1"


def test_a_signature_matches_the_spec_computation_by_hand() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    made = sign(secret, "msg_1", 1700000000, b"{}")
    expected = Webhook(secret).sign("msg_1", datetime.fromtimestamp(1700000000, UTC), "{}")
    assert made == expected


def test_a_changed_body_or_another_secret_fails_verification() -> None:
    secret, other = generate_secret(), generate_secret()
    headers = signed_headers([secret], "evt_1", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(BODY, headers)


def test_during_a_rotation_both_signatures_are_sent_and_each_secret_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    headers = signed_headers([new, old], "evt_1", int(time.time()), BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)


def test_an_endpoint_signs_with_the_old_secret_only_until_the_grace_period_ends() -> None:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    endpoint = Endpoint(
        id="ep_1",
        url="https://example.com/hook",
        secret="whsec_new",
        previous_secret="whsec_old",
        previous_secret_expires_at=now + timedelta(hours=1),
        created_at=now,
        updated_at=now,
    )
    assert endpoint.signing_secrets(now) == ["whsec_new", "whsec_old"]
    assert endpoint.signing_secrets(now + timedelta(hours=1)) == ["whsec_new"]


@pytest.mark.parametrize(
    "bad", ["nope", "whsec_", "whsec_!!!", "whsec_" + base64.b64encode(b"short").decode()]
)
def test_a_malformed_or_short_secret_is_refused(bad: str) -> None:
    with pytest.raises(InvalidSecret):
        secret_key(bad)
