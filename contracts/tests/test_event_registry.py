"""The registry: every type, its stream, lookups and typed payloads."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from riverbed_contracts import (
    REGISTRY,
    STREAMS,
    CloudEvent,
    EmailSent,
    EventSpec,
    Payload,
    PaymentSucceeded,
    SendEmail,
    UnknownEventType,
    get_spec,
    new_event,
    registry,
    spec_for,
    validate_data,
)


def test_streams_are_the_documented_ones() -> None:
    assert STREAMS == (
        "email.failed",
        "email.requested",
        "email.sent",
        "email.suppressed",
        "payment.dispute.closed",
        "payment.dispute.opened",
        "payment.failed",
        "payment.payout.paid",
        "payment.reconciliation.completed",
        "payment.reconciliation.mismatch",
        "payment.recorded",
        "payment.refund.recorded",
        "payment.refunded",
        "payment.succeeded",
        "webhook.delivery.exhausted",
        "webhook.delivery.requested",
        "webhook.delivery.succeeded",
        "webhook.endpoint.disabled",
    )


@pytest.mark.parametrize("spec", REGISTRY.values(), ids=list(REGISTRY))
def test_every_type_is_its_stream_plus_a_version(spec: EventSpec) -> None:
    assert spec.type == f"{spec.stream}.v{spec.version}"
    assert re.fullmatch(r"[a-z_.]+\.v[1-9][0-9]*", spec.type)
    assert spec.stream in STREAMS
    assert get_spec(spec.type) is spec
    assert spec_for(spec.model) is spec


@pytest.mark.parametrize("spec", REGISTRY.values(), ids=list(REGISTRY))
def test_requests_are_commands_and_everything_else_is_an_event(spec: EventSpec) -> None:
    assert spec.kind == ("command" if spec.stream.endswith(".requested") else "event")


def test_unknown_type_error_lists_the_known_types() -> None:
    with pytest.raises(UnknownEventType) as caught:
        get_spec("email.requested.v9")
    assert caught.value.type == "email.requested.v9"
    assert "'email.requested.v9'" in str(caught.value)
    assert all(known in str(caught.value) for known in REGISTRY)
    assert isinstance(caught.value, ValueError)  # a bad message, like a ValidationError
    assert registry.get is get_spec


@pytest.mark.parametrize("bad", ["email.requested", "Email.requested.v1", "email.v0", "email.v1"])
def test_a_spec_refuses_a_type_name_that_breaks_the_naming_rule(bad: str) -> None:
    with pytest.raises(ValueError, match=r"'<stream>\.v<N>'"):
        EventSpec(bad, SendEmail, "command", "x")


def test_validate_data_returns_the_typed_payload() -> None:
    event = CloudEvent(type="email.requested.v1", data={"to": "ada@example.com", "template": "w"})
    payload = validate_data(event)
    assert isinstance(payload, SendEmail)
    assert payload.template == "w"


def test_validate_data_refuses_data_that_does_not_fit_and_unknown_types() -> None:
    with pytest.raises(ValidationError):
        validate_data(CloudEvent(type="email.sent.v1", data={"to": "ada@example.com"}))
    with pytest.raises(UnknownEventType):
        validate_data(CloudEvent(type="sms.requested.v1", data={}))


def test_new_event_takes_its_type_from_the_registry_and_omits_absent_fields() -> None:
    payment = PaymentSucceeded(
        provider="stripe", provider_payment_id="pi_1", amount=5, currency="EUR"
    )
    event = new_event(payment, subject="order/7")
    assert (event.type, event.subject) == ("payment.succeeded.v1", "order/7")
    assert event.data == {
        "provider": "stripe",
        "provider_payment_id": "pi_1",
        "amount": 5,
        "currency": "EUR",
        "metadata": {},
    }
    assert validate_data(event) == payment


def test_new_event_keeps_nulls_inside_free_form_values() -> None:
    email = SendEmail(to="ada@example.com", template="w", variables={"coupon": None})
    assert new_event(email).data["variables"] == {"coupon": None}


def test_new_event_with_a_cause_continues_its_correlation() -> None:
    request = new_event(SendEmail(to="ada@example.com", template="w"), correlationid="req-1")
    sent = new_event(
        EmailSent(request_id=request.id, to="ada@example.com", message_id="<m@x>"), cause=request
    )
    assert (sent.type, sent.correlationid, sent.causationid) == (
        "email.sent.v1",
        "req-1",
        request.id,
    )


def test_new_event_refuses_an_unregistered_payload_model() -> None:
    class Stray(Payload):
        pass

    with pytest.raises(LookupError, match="Stray is not a registered payload model"):
        new_event(Stray())


def test_every_type_says_who_may_produce_it() -> None:
    from riverbed_contracts.registry import REGISTRY

    internal = {t for t, spec in REGISTRY.items() if spec.access == "internal"}
    # what merchants receive as signed confirmations, and commands to other services,
    # are never what an upstream system may post
    assert {
        "webhook.delivery.requested.v1",
        "payment.recorded.v1",
        "payment.refund.recorded.v1",
        "email.sent.v1",
    } <= internal
    assert REGISTRY["email.requested.v1"].access == "public"
    for spec in REGISTRY.values():
        assert spec.access != "internal" or spec.producers, f"{spec.type} has no producer"


def test_an_internal_type_trusts_only_its_producers_source() -> None:
    from riverbed_contracts.registry import get_spec, service_source

    task = get_spec("webhook.delivery.requested.v1")
    assert task.trusts_source(service_source("webhooks"))
    assert not task.trusts_source("urn:riverbed:gateway:local")
    assert not task.trusts_source("urn:riverbed:inbound:stripe")
    assert get_spec("email.requested.v1").trusts_source("urn:riverbed:gateway:crm")


def test_a_provider_type_trusts_the_inbound_webhooks_and_its_producers_only() -> None:
    from riverbed_contracts.email import EmailSent
    from riverbed_contracts.registry import EventSpec

    spec = EventSpec("x.happened.v1", EmailSent, "event", "d", access="provider", producers=("p",))
    assert spec.trusts_source("urn:riverbed:inbound:stripe")
    assert spec.trusts_source("urn:riverbed:p")
    assert not spec.trusts_source("urn:riverbed:gateway:crm")
