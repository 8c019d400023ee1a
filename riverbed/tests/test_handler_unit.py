"""Handlers are plain async functions: testable without Redis via ``message_for``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from riverbed.consumer import Message
from riverbed.testing import make_event, message_for
from riverbed_contracts import CloudEvent, PaymentSucceeded


async def double_the_amount(message: Message[PaymentSucceeded]) -> int:
    return message.payload.amount * 2


async def test_a_handler_gets_the_typed_payload_without_any_io() -> None:
    message = message_for(make_event(5), attempt=2)
    assert await double_the_amount(message) == 2 * 1005
    assert message.attempt == 2
    assert message.stream == "payment.succeeded"


def test_message_for_refuses_data_the_consumer_would_dead_letter() -> None:
    with pytest.raises(ValidationError):
        message_for(CloudEvent(type="payment.succeeded.v1", data={"amount": "lots"}))
