"""The delivery steps with fakes for every port: no Redis, no SMTP, no sleeping."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from riverbed.errors import PermanentError, RetryLater
from riverbed.logging import configure_logging
from riverbed.testing import message_for
from riverbed_contracts import CloudEvent
from riverbed_contracts.email import SendEmail
from riverbed_contracts.registry import new_event
from riverbed_email.addresses import DomainLabels
from riverbed_email.compose import OutgoingEmail
from riverbed_email.delivery import (
    Delivery,
    DeliveryPolicy,
    SmtpDeferred,
    outcome_event_id,
)
from riverbed_email.outcomes import SmtpResult
from riverbed_email.ports import SentRecord, Suppression
from riverbed_email.templates import TemplateRenderer

TEMPLATES = Path(__file__).parents[1] / "templates"
SECRET_BODY = "the-body-must-never-be-logged"
ACCEPTED = SmtpResult(250, "2.0.0 OK: queued", "data")


# -- fakes of the ports --------------------------------------------------------------


@dataclass
class FakeSender:
    results: list[SmtpResult] = field(default_factory=lambda: [ACCEPTED])
    sent: list[OutgoingEmail] = field(default_factory=list)

    async def send(self, email: OutgoingEmail) -> SmtpResult:
        self.sent.append(email)
        return self.results[min(len(self.sent), len(self.results)) - 1]


@dataclass
class FakeSuppressions:
    entries_: dict[str, Suppression] = field(default_factory=dict)

    async def get(self, address: str) -> Suppression | None:
        return self.entries_.get(address.lower())

    async def add(self, suppression: Suppression) -> bool:
        if suppression.address in self.entries_:
            return False
        self.entries_[suppression.address] = suppression
        return True

    async def remove(self, address: str) -> bool:
        return self.entries_.pop(address, None) is not None

    async def entries(self) -> AsyncIterator[Suppression]:
        for entry in list(self.entries_.values()):
            yield entry


@dataclass
class FakeLedger:
    records: dict[str, SentRecord] = field(default_factory=dict)
    failures: int = 0  # the next this many record() calls fail as if Redis were down

    async def get(self, event_id: str) -> SentRecord | None:
        return self.records.get(event_id)

    async def record(self, event_id: str, record: SentRecord) -> bool:
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("Redis is down")
        if event_id in self.records:
            return False
        self.records[event_id] = record
        return True


@dataclass
class FakeThrottle:
    waits: list[int] = field(default_factory=list)  # answers of take(), then 0
    slowed: list[str] = field(default_factory=list)

    async def take(self, domain: str) -> int:
        return self.waits.pop(0) if self.waits else 0

    async def slow_down(self, domain: str) -> int:
        self.slowed.append(domain)
        return len(self.slowed)


@dataclass
class World:
    sender: FakeSender = field(default_factory=FakeSender)
    suppressions: FakeSuppressions = field(default_factory=FakeSuppressions)
    ledger: FakeLedger = field(default_factory=FakeLedger)
    throttle: FakeThrottle = field(default_factory=FakeThrottle)
    published: list[CloudEvent] = field(default_factory=list)
    slept: list[float] = field(default_factory=list)
    max_attempts: int = 5

    @property
    def delivery(self) -> Delivery:
        async def publish(events: Sequence[CloudEvent]) -> None:
            self.published.extend(events)

        async def sleep(seconds: float) -> None:
            self.slept.append(seconds)

        return Delivery(
            DeliveryPolicy(
                from_address="Riverbed <no-reply@riverbed.test>",
                envelope_sender="no-reply@riverbed.test",
                message_id_domain="riverbed.test",
                max_attempts=self.max_attempts,
                rate_limit_max_wait_ms=2_000,
            ),
            renderer=TemplateRenderer(TEMPLATES),
            sender=self.sender,
            suppressions=self.suppressions,
            ledger=self.ledger,
            throttle=self.throttle,
            publish=publish,
            domain_labels=DomainLabels(["example.com"]),
            sleep=sleep,
        )


@pytest.fixture
def world() -> World:
    return World()


def request(**data: Any) -> CloudEvent:
    values: dict[str, Any] = {"to": "ada@example.com", "subject": "Hi", "text": SECRET_BODY}
    values.update(data)
    return new_event(SendEmail(**values), correlationid="corr-1")


# -- sent ------------------------------------------------------------------------------


async def test_an_accepted_send_returns_email_sent_and_records_it_under_the_event_id(
    world: World,
) -> None:
    event = request()
    emitted = await world.delivery(message_for(event))
    [sent] = emitted
    assert sent.type == "email.sent.v1"
    assert sent.data == {
        "request_id": event.id,
        "to": "ada@example.com",
        "message_id": f"<{event.id}@riverbed.test>",
        "attempts": 1,
    }
    assert (sent.causationid, sent.correlationid) == (event.id, "corr-1")
    assert world.ledger.records[event.id].message_id == f"<{event.id}@riverbed.test>"
    [email] = world.sender.sent
    assert (email.recipient, email.message_id) == ("ada@example.com", f"<{event.id}@riverbed.test>")
    assert world.published == []  # email.sent is returned: the runtime publishes it


async def test_a_redelivered_request_already_accepted_is_not_sent_again(world: World) -> None:
    event = request()
    first = await world.delivery(message_for(event))
    again = await world.delivery(message_for(event, attempt=2))
    assert len(world.sender.sent) == 1
    assert again == first or [e.id for e in again] == [e.id for e in first]
    assert again[0].data["attempts"] == 1  # the attempt that sent it


async def test_every_outcome_event_id_is_derived_from_the_request(world: World) -> None:
    event = request()
    [sent] = await world.delivery(message_for(event))
    assert sent.id == outcome_event_id(event.id, "sent")
    assert outcome_event_id(event.id, "sent") != outcome_event_id(event.id, "failed")


async def test_a_template_request_is_rendered_into_the_message(world: World) -> None:
    event = request(to="ada@example.com", subject=None, text=None, template="welcome",
                    variables={"name": "Ada"})  # fmt: skip
    await world.delivery(message_for(event))
    [email] = world.sender.sent
    assert email.message["Subject"] == "Welcome to Riverbed, Ada"
    assert email.message.get_content_type() == "multipart/alternative"


# -- suppressed ------------------------------------------------------------------------


async def test_a_suppressed_address_is_skipped_with_email_suppressed(world: World) -> None:
    world.suppressions.entries_["ada@example.com"] = Suppression(
        "ada@example.com", "550 5.1.1 no such user", 550, event_id="earlier"
    )
    event = request(to="Ada@Example.com")
    [suppressed] = await world.delivery(message_for(event))
    assert world.sender.sent == []
    assert suppressed.type == "email.suppressed.v1"
    assert suppressed.data == {
        "request_id": event.id,
        "to": "Ada@Example.com",
        "reason": "550 5.1.1 no such user",
        "smtp_code": 550,
    }


# -- retried ---------------------------------------------------------------------------


async def test_a_greylisting_reply_is_retried_and_slows_the_domain_down(world: World) -> None:
    world.sender.results = [SmtpResult(451, "4.7.1 greylisted", "rcpt")]
    with pytest.raises(SmtpDeferred, match=re.escape("451 4.7.1 greylisted")):
        await world.delivery(message_for(request()))
    assert world.throttle.slowed == ["example.com"]
    assert world.published == []
    assert world.ledger.records == {}


async def test_a_dropped_connection_is_retried_without_slowing_down(world: World) -> None:
    world.sender.results = [SmtpResult(None, "connection dropped", "transaction")]
    with pytest.raises(SmtpDeferred, match="no reply"):
        await world.delivery(message_for(request()))
    assert world.throttle.slowed == []


async def test_the_last_attempt_publishes_email_failed_before_the_runtime_gives_up(
    world: World,
) -> None:
    world.sender.results = [SmtpResult(451, "4.7.1 greylisted", "rcpt")]
    event = request()
    with pytest.raises(SmtpDeferred):
        await world.delivery(message_for(event, attempt=5))
    [failed] = world.published
    assert failed.type == "email.failed.v1"
    assert failed.id == outcome_event_id(event.id, "failed")
    assert failed.data["permanent"] is False
    assert failed.data["smtp_code"] == 451
    assert failed.data["attempts"] == 5


# -- rejected --------------------------------------------------------------------------


async def test_a_550_suppresses_the_address_publishes_email_failed_and_dead_letters(
    world: World,
) -> None:
    world.sender.results = [SmtpResult(550, "5.1.1 no such user", "rcpt")]
    event = request(to="Ada@Example.com")
    with pytest.raises(PermanentError, match=re.escape("550 5.1.1 no such user")):
        await world.delivery(message_for(event))
    suppression = world.suppressions.entries_["ada@example.com"]
    assert (suppression.smtp_code, suppression.event_id) == (550, event.id)
    [failed] = world.published
    assert failed.type == "email.failed.v1"
    assert failed.data == {
        "request_id": event.id,
        "to": "Ada@Example.com",
        "reason": "550 5.1.1 no such user",
        "permanent": True,
        "smtp_code": 550,
        "attempts": 1,
    }


async def test_a_policy_refusal_is_permanent_but_does_not_suppress(world: World) -> None:
    world.sender.results = [SmtpResult(554, "5.7.1 refused by policy", "data")]
    with pytest.raises(PermanentError):
        await world.delivery(message_for(request()))
    assert world.suppressions.entries_ == {}
    assert [e.type for e in world.published] == ["email.failed.v1"]


async def test_a_crash_between_suppressing_and_dead_lettering_is_finished_on_redelivery(
    world: World,
) -> None:
    world.sender.results = [SmtpResult(550, "5.1.1 no such user", "rcpt")]
    event = request()
    with pytest.raises(PermanentError):
        await world.delivery(message_for(event))
    # the process died before the runtime dead-lettered it: redelivered
    with pytest.raises(PermanentError, match="550"):
        await world.delivery(message_for(event, attempt=2))
    assert len(world.sender.sent) == 1
    assert [e.id for e in world.published] == [outcome_event_id(event.id, "failed")] * 2


async def test_a_missing_variable_publishes_email_failed_and_dead_letters_naming_it(
    world: World,
) -> None:
    event = request(subject=None, text=None, template="welcome", variables={})
    with pytest.raises(PermanentError, match="variable missing: 'name' is undefined"):
        await world.delivery(message_for(event))
    assert world.sender.sent == []
    [failed] = world.published
    assert failed.data["permanent"] is True
    assert "smtp_code" not in failed.data
    assert "'name' is undefined" in failed.data["reason"]


async def test_a_missing_template_is_named(world: World) -> None:
    event = request(subject=None, text=None, template="no-such-template")
    with pytest.raises(PermanentError, match="template 'no-such-template' not found"):
        await world.delivery(message_for(event))


# -- pacing ----------------------------------------------------------------------------


async def test_a_short_wait_for_the_domain_rate_is_waited_out_in_process(world: World) -> None:
    world.throttle.waits = [300, 500]
    await world.delivery(message_for(request()))
    assert world.slept == [0.3, 0.5]
    assert len(world.sender.sent) == 1


async def test_a_long_wait_for_the_domain_rate_reschedules_the_request(world: World) -> None:
    world.throttle.waits = [1_500, 1_500]
    with pytest.raises(RetryLater) as caught:
        await world.delivery(message_for(request()))
    assert world.slept == [1.5]
    assert 1_500 <= caught.value.delay_ms <= 3_000
    assert caught.value.counts_as_delivery is False, "waiting for our pace is no attempt"
    assert world.sender.sent == []


async def test_a_rescheduled_request_on_its_last_attempt_is_not_given_up(world: World) -> None:
    world.throttle.waits = [5_000]
    last = message_for(request(), attempt=world.max_attempts)
    with pytest.raises(RetryLater):
        await world.delivery(last)
    assert world.published == [], "no email.failed: the last attempt has not been made"


# -- the marker ------------------------------------------------------------------------


async def test_a_failed_marker_write_is_retried_so_a_redelivery_does_not_resend(
    world: World,
) -> None:
    world.ledger.failures = 2
    event = request()
    await world.delivery(message_for(event))
    assert event.id in world.ledger.records
    await world.delivery(message_for(event, attempt=2))
    assert len(world.sender.sent) == 1


async def test_a_marker_that_cannot_be_written_still_reports_the_send(world: World) -> None:
    world.ledger.failures = 99
    [sent] = await world.delivery(message_for(request()))
    assert sent.type == "email.sent.v1"


# -- logs ------------------------------------------------------------------------------


async def test_logs_never_contain_the_body(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "json")
    world.sender.results = [ACCEPTED, SmtpResult(550, "5.1.1 no such user", "rcpt")]
    await world.delivery(message_for(request()))
    with pytest.raises(PermanentError):
        await world.delivery(message_for(request(html=f"<p>{SECRET_BODY}</p>")))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == [
        "accepted by the relay",
        "giving up on this email",
    ]
    assert SECRET_BODY not in repr(lines)
    assert all(line["to_domain"] == "example.com" for line in lines)
