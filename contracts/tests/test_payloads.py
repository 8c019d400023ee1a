"""Payload models: what each accepts, and how clearly it says what is wrong."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from riverbed_contracts import (
    MAX_JSON_DEPTH,
    REGISTRY,
    DeliverWebhook,
    EventSpec,
    Payload,
    PaymentRefunded,
    PaymentSucceeded,
    SendEmail,
    WebhookDelivered,
    nested_deeper_than,
)

ADA = "ada@example.com"
PAYMENT = {"provider": "stripe", "provider_payment_id": "pi_1", "amount": 1999, "currency": "EUR"}


def errors(model: type[Payload], data: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return [dict(error) for error in caught.value.errors()]


def only_message(model: type[Payload], data: dict[str, Any]) -> str:
    found = errors(model, data)
    assert len(found) == 1, found
    return str(found[0]["msg"])


@pytest.mark.parametrize("spec", REGISTRY.values(), ids=list(REGISTRY))
def test_every_type_documents_examples_that_its_model_accepts(spec: EventSpec) -> None:
    examples = spec.model.model_json_schema()["examples"]
    assert examples
    for example in examples:
        spec.model.model_validate(example)


def test_send_email_template_form_is_accepted_without_variables() -> None:
    email = SendEmail.model_validate({"to": ADA, "template": "welcome"})
    assert (email.template, email.variables, email.category) == ("welcome", None, "transactional")


def test_send_email_raw_form_is_accepted_with_optional_html() -> None:
    email = SendEmail.model_validate(
        {"to": ADA, "subject": "Hi", "text": "Hello", "html": "<p>Hello</p>", "category": "bulk"}
    )
    assert (email.subject, email.html, email.category) == ("Hi", "<p>Hello</p>", "bulk")


def test_send_email_with_both_forms_is_refused_naming_the_mixed_fields() -> None:
    message = only_message(SendEmail, {"to": ADA, "template": "welcome", "subject": "Hi"})
    assert "not both" in message
    assert "['template', 'subject']" in message


def test_send_email_with_neither_form_is_refused_naming_what_is_missing() -> None:
    assert "missing ['subject', 'text']" in only_message(SendEmail, {"to": ADA})
    assert "missing ['text']" in only_message(SendEmail, {"to": ADA, "subject": "Hi"})


def test_send_email_variables_without_template_are_refused() -> None:
    message = only_message(SendEmail, {"to": ADA, "variables": {"name": "Ada"}})
    assert "'variables' belongs to the template form" in message


@pytest.mark.parametrize("address", ["ada", "ada@example", "ada @example.com", "@example.com"])
def test_send_email_refuses_what_is_not_an_email_address(address: str) -> None:
    (error,) = errors(SendEmail, {"to": address, "template": "welcome"})
    assert error["loc"] == ("to",)


def test_send_email_refuses_an_unknown_category_listing_the_accepted_ones() -> None:
    (error,) = errors(SendEmail, {"to": ADA, "template": "welcome", "category": "urgent"})
    assert error["loc"] == ("category",)
    assert "'transactional' or 'bulk'" in error["msg"]


def test_unknown_fields_are_ignored_so_that_a_version_can_grow() -> None:
    email = SendEmail.model_validate({"to": ADA, "template": "welcome", "priority": "high"})
    assert "priority" not in email.model_dump()


def test_payloads_are_immutable() -> None:
    email = SendEmail.model_validate({"to": ADA, "template": "welcome"})
    with pytest.raises(ValidationError):
        email.to = "eve@example.com"  # type: ignore[misc]


@pytest.mark.parametrize("currency", ["eur", "EURO", "EU", "€"])
def test_payment_currency_must_be_an_uppercase_iso_4217_code(currency: str) -> None:
    (error,) = errors(PaymentSucceeded, {**PAYMENT, "currency": currency})
    assert error["loc"] == ("currency",)


@pytest.mark.parametrize("amount", [19.99, 1999.0, "1999", True, 0, -5])
def test_payment_amount_is_a_positive_integer_of_minor_units_never_coerced(amount: Any) -> None:
    (error,) = errors(PaymentSucceeded, {**PAYMENT, "amount": amount})
    assert error["loc"] == ("amount",)


def test_payment_succeeded_needs_only_provider_payment_id_amount_and_currency() -> None:
    payment = PaymentSucceeded.model_validate(PAYMENT)
    assert (payment.amount, payment.fee_amount, payment.metadata) == (1999, None, {})


def test_payment_refunded_needs_the_refund_id() -> None:
    (error,) = errors(PaymentRefunded, PAYMENT)
    assert (error["loc"], error["type"]) == (("provider_refund_id",), "missing")


def test_payment_time_must_carry_an_offset() -> None:
    (error,) = errors(PaymentSucceeded, {**PAYMENT, "occurred_at": "2024-05-01T12:00:00"})
    assert error["loc"] == ("occurred_at",)


def test_webhook_delivery_needs_the_event_id_and_ignores_unknown_nested_fields() -> None:
    request = {"delivery_id": "d1", "endpoint_id": "e1", "event": {"type": "x", "data": {}}}
    (error,) = errors(DeliverWebhook, request)
    assert (error["loc"], error["type"]) == (("event", "id"), "missing")
    request["event"] = {"id": "ev1", "type": "x", "data": {}, "later": 1}
    assert DeliverWebhook.model_validate(request).attempt == 1


def test_webhook_delivered_status_must_be_2xx() -> None:
    ids = {"delivery_id": "d1", "endpoint_id": "e1", "event_id": "ev1"}
    (error,) = errors(WebhookDelivered, {**ids, "attempt": 1, "status_code": 500, "duration_ms": 3})
    assert error["loc"] == ("status_code",)


@pytest.mark.parametrize(
    "subject",
    ["Hi\x00there", "Hi\r\nBcc: all@example.com", "Hi\nthere", "\x7f", "Hi\x85", "a\u2028b"],
    ids=["nul", "crlf", "lf", "del", "c1", "line-separator"],
)
def test_an_email_subject_with_a_control_character_is_refused(subject: str) -> None:
    found = errors(SendEmail, {"to": ADA, "subject": subject, "text": "t"})
    assert [error["loc"] for error in found] == [("subject",)]


def test_an_email_subject_may_hold_a_tab_and_any_printable_text() -> None:
    SendEmail(to=ADA, subject="Grüße\tfrom Zürich ✓ 😀", text="t")


@pytest.mark.parametrize("address", ["ada\x00@example.com", "ada@exa\rmple.com"])
def test_an_address_with_a_control_character_is_refused(address: str) -> None:
    assert [error["loc"] for error in errors(SendEmail, {"to": address, "template": "w"})] == [
        ("to",)
    ]


@pytest.mark.parametrize(
    "occurred_at",
    [0, 1_718_000_000, 1.5, "1718000000", "2024-06-10 06:13:20Z", "2024-06-10T06:13:20"],
    ids=["zero", "unix", "float", "digits", "space", "no-offset"],
)
def test_a_time_is_an_rfc3339_string_never_a_number(occurred_at: Any) -> None:
    found = errors(PaymentSucceeded, {**PAYMENT, "occurred_at": occurred_at})
    assert [error["loc"] for error in found] == [("occurred_at",)]


def test_a_time_as_rfc3339_text_or_a_datetime_object_is_taken() -> None:
    text = PaymentSucceeded.model_validate({**PAYMENT, "occurred_at": "2024-06-10T08:13:20+02:00"})
    native = PaymentSucceeded(
        **{**PAYMENT, "occurred_at": datetime(2024, 6, 10, 6, 13, 20, tzinfo=UTC)}
    )
    assert text.occurred_at == native.occurred_at


def test_nesting_is_measured_with_the_outermost_level_counting_one() -> None:
    deepest: Any = {}
    for _ in range(MAX_JSON_DEPTH - 1):
        deepest = [deepest]
    assert not nested_deeper_than(deepest)  # exactly MAX_JSON_DEPTH levels
    assert nested_deeper_than({"a": deepest})
    assert not nested_deeper_than("scalar", 0)
    assert nested_deeper_than([], 0)
    assert not nested_deeper_than({"a": 1, "b": [1, 2]}, 2)
    assert nested_deeper_than({"a": 1, "b": [1, [2]]}, 2)
