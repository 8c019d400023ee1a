"""The delivery steps with fakes for every port: no Redis, no SMTP, no sleeping.

"Redis away" is a fake ledger or publish that raises ``ConnectionError`` until told
otherwise; the fake sleep only yields, so retries run as fast as the loop turns.
"""

from __future__ import annotations

import asyncio
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
from riverbed.testing import message_for, wait_for
from riverbed_contracts import CloudEvent
from riverbed_contracts.email import SendEmail
from riverbed_contracts.registry import new_event
from riverbed_email.adapters.records import Recorder
from riverbed_email.adapters.templates import TemplateRenderer
from riverbed_email.domain.addresses import DomainLabels
from riverbed_email.domain.compose import OutgoingEmail
from riverbed_email.domain.errors import AttemptsExhausted, SmtpDeferred
from riverbed_email.domain.outcome_events import outcome_event_id
from riverbed_email.domain.records import FailedRecord, SentRecord, Suppression
from riverbed_email.domain.smtp_replies import SmtpResult
from riverbed_email.entrypoints.handlers import EmailRequestedHandler
from riverbed_email.service_layer.delivery import Delivery, DeliveryPolicy

TEMPLATES = Path(__file__).parents[1] / "templates"
SECRET_BODY = "the-body-must-never-be-logged"
ACCEPTED = SmtpResult(250, "2.0.0 OK: queued", "data")


# -- fakes of the ports --------------------------------------------------------------


@dataclass
class FakeSender:
    results: list[SmtpResult] = field(default_factory=lambda: [ACCEPTED])
    sent: list[OutgoingEmail] = field(default_factory=list)
    answer: asyncio.Event | None = None  # when given, every reply waits until it is set

    async def send(self, email: OutgoingEmail) -> SmtpResult:
        self.sent.append(email)
        if self.answer is not None:
            await self.answer.wait()
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
    failed: dict[str, FailedRecord] = field(default_factory=dict)
    failures: int = 0  # the next this many writes fail as if Redis were down
    writes: int = 0  # writes tried, failed ones included
    leases: dict[str, str] = field(default_factory=dict)  # event id -> holder
    released: list[str] = field(default_factory=list)

    async def get(self, event_id: str) -> SentRecord | None:
        return self.records.get(event_id)

    async def failure(self, event_id: str) -> FailedRecord | None:
        return self.failed.get(event_id)

    async def record_many(
        self, records: Sequence[tuple[str, SentRecord | FailedRecord]]
    ) -> list[bool]:
        self.writes += 1
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("Redis is down")
        stored = []
        for event_id, record in records:
            kept: dict[str, Any] = self.records if isinstance(record, SentRecord) else self.failed
            stored.append(event_id not in kept)
            kept.setdefault(event_id, record)
        return stored

    async def hold(self, event_id: str, holder: str, lease_ms: int) -> int:
        if self.leases.setdefault(event_id, holder) != holder:
            return 42_000  # another replica's lease runs 42 s more
        return 0

    async def release(self, event_id: str, holder: str) -> None:
        if self.failures:
            raise RedisConnectionError("Redis is down")
        if self.leases.get(event_id) == holder:
            del self.leases[event_id]
            self.released.append(event_id)


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
    publish_failures: int = 0  # the next this many publishes fail as if Redis were down
    slept: list[float] = field(default_factory=list)
    max_attempts: int = 5
    _delivery: Delivery | None = None

    @property
    def delivery(self) -> Delivery:
        """One use case per world, as one process has one (its in-memory state matters)."""
        if self._delivery is None:
            self._delivery = self._make()
        return self._delivery

    @property
    def handle(self) -> EmailRequestedHandler:
        """The consumer's handler over :attr:`delivery`, as the runtime calls it."""
        return EmailRequestedHandler(self.delivery)

    def _make(self) -> Delivery:
        async def publish(events: Sequence[CloudEvent]) -> None:
            if self.publish_failures:
                self.publish_failures -= 1
                raise RedisConnectionError("Redis is down")
            self.published.extend(events)

        async def sleep(seconds: float) -> None:
            self.slept.append(seconds)
            await asyncio.sleep(0)  # yield, as a real sleep does: the writer is a loop

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
            recorder=Recorder(self.ledger, sleep=sleep),
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


async def test_an_accepted_send_is_recorded_under_the_event_id_then_email_sent_published(
    world: World,
) -> None:
    event = request()
    assert await world.handle(message_for(event)) == [], "the handler publishes, not the runtime"
    [sent] = world.published
    assert sent.type == "email.sent.v1"
    assert sent.data == {
        "request_id": event.id,
        "to": "ada@example.com",
        "message_id": f"<{event.id}@riverbed.test>",
        "attempts": 1,
    }
    assert (sent.causationid, sent.correlationid) == (event.id, "corr-1")
    record = world.ledger.records[event.id]
    assert record.message_id == f"<{event.id}@riverbed.test>"
    assert sent.time.timestamp() * 1000 == pytest.approx(record.at_ms), "the record's time"
    [email] = world.sender.sent
    assert (email.recipient, email.message_id) == ("ada@example.com", f"<{event.id}@riverbed.test>")


async def test_a_redelivered_request_already_accepted_publishes_the_same_email_sent_again(
    world: World,
) -> None:
    event = request()
    await world.handle(message_for(event))
    await world.handle(message_for(event, attempt=2))
    assert len(world.sender.sent) == 1
    first, again = world.published
    assert again.model_dump() == first.model_dump(), "the same event: id, time, data"
    assert again.data["attempts"] == 1  # the attempt that sent it


async def test_every_outcome_event_id_is_derived_from_the_request(world: World) -> None:
    event = request()
    await world.handle(message_for(event))
    [sent] = world.published
    assert sent.id == outcome_event_id(event.id, "sent")
    assert outcome_event_id(event.id, "sent") != outcome_event_id(event.id, "failed")


async def test_a_template_request_is_rendered_into_the_message(world: World) -> None:
    event = request(to="ada@example.com", subject=None, text=None, template="welcome",
                    variables={"name": "Ada"})  # fmt: skip
    await world.handle(message_for(event))
    [email] = world.sender.sent
    assert email.message["Subject"] == "Welcome to Riverbed, Ada"
    assert email.message.get_content_type() == "multipart/alternative"


# -- suppressed ------------------------------------------------------------------------


async def test_a_suppressed_address_is_skipped_with_email_suppressed(world: World) -> None:
    world.suppressions.entries_["ada@example.com"] = Suppression(
        "ada@example.com", "550 5.1.1 no such user", 550, event_id="earlier"
    )
    event = request(to="Ada@Example.com")
    assert await world.handle(message_for(event)) == []
    assert world.sender.sent == []
    [suppressed] = world.published
    assert suppressed.type == "email.suppressed.v1"
    assert suppressed.id == outcome_event_id(event.id, "suppressed")
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
        await world.handle(message_for(request()))
    assert world.throttle.slowed == ["example.com"]
    assert world.published == []
    assert world.ledger.records == {}
    assert world.ledger.failed == {}


async def test_a_dropped_connection_is_retried_without_slowing_down(world: World) -> None:
    world.sender.results = [SmtpResult(None, "connection dropped", "transaction")]
    with pytest.raises(SmtpDeferred, match="no reply"):
        await world.handle(message_for(request()))
    assert world.throttle.slowed == []


async def test_the_last_attempt_records_and_publishes_email_failed_then_dead_letters(
    world: World,
) -> None:
    world.sender.results = [SmtpResult(451, "4.7.1 greylisted", "rcpt")]
    event = request()
    with pytest.raises(AttemptsExhausted, match=re.escape("gave up after 5 attempts: 451 4.7.1")):
        await world.handle(message_for(event, attempt=5))
    [failed] = world.published
    assert failed.type == "email.failed.v1"
    assert failed.id == outcome_event_id(event.id, "failed")
    assert failed.data["permanent"] is False
    assert failed.data["smtp_code"] == 451
    assert failed.data["attempts"] == 5
    assert world.ledger.failed[event.id].kind == "exhausted"


async def test_a_delivery_past_the_last_attempt_gives_up_without_trying_the_relay(
    world: World,
) -> None:
    # the last attempt was cut off (a crash, a timeout) before any outcome was recorded
    event = request()
    with pytest.raises(AttemptsExhausted, match="the last one did not complete"):
        await world.handle(message_for(event, attempt=6))
    assert world.sender.sent == []
    [failed] = world.published
    assert (failed.id, failed.data["permanent"], failed.data["attempts"]) == (
        outcome_event_id(event.id, "failed"),
        False,
        5,
    )
    assert "smtp_code" not in failed.data


async def test_a_send_accepted_on_the_last_attempt_is_reported_sent_past_it(
    world: World,
) -> None:
    event = request()
    await world.handle(message_for(event, attempt=5))
    # cut off before the acknowledgement; the runtime's grace delivery comes back here
    await world.handle(message_for(event, attempt=6))
    assert [e.type for e in world.published] == ["email.sent.v1", "email.sent.v1"]
    assert len({e.id for e in world.published}) == 1
    assert len(world.sender.sent) == 1


# -- rejected --------------------------------------------------------------------------


async def test_a_550_suppresses_the_address_records_publishes_email_failed_and_dead_letters(
    world: World,
) -> None:
    world.sender.results = [SmtpResult(550, "5.1.1 no such user", "rcpt")]
    event = request(to="Ada@Example.com")
    with pytest.raises(PermanentError, match=re.escape("550 5.1.1 no such user")):
        await world.handle(message_for(event))
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
    assert world.ledger.failed[event.id].kind == "rejected"


async def test_a_policy_refusal_is_permanent_but_does_not_suppress(world: World) -> None:
    world.sender.results = [SmtpResult(554, "5.7.1 refused by policy", "data")]
    with pytest.raises(PermanentError):
        await world.handle(message_for(request()))
    assert world.suppressions.entries_ == {}
    assert [e.type for e in world.published] == ["email.failed.v1"]


async def test_a_refused_request_redelivered_publishes_the_same_email_failed_and_never_resends(
    world: World,
) -> None:
    # a policy refusal suppresses nothing: only the failure record stops a second try
    world.sender.results = [SmtpResult(554, "5.7.1 refused by policy", "data"), ACCEPTED]
    event = request()
    with pytest.raises(PermanentError, match="554"):
        await world.handle(message_for(event))
    # cut off before the runtime dead-lettered it: redelivered
    with pytest.raises(PermanentError, match="554"):
        await world.handle(message_for(event, attempt=2))
    assert len(world.sender.sent) == 1
    first, again = world.published
    assert again.model_dump() == first.model_dump()


async def test_a_suppression_of_this_very_request_without_its_record_is_finished(
    world: World,
) -> None:
    # cut off between suppressing and recording the give-up (or an older version's)
    event = request()
    world.suppressions.entries_["ada@example.com"] = Suppression(
        "ada@example.com", "550 5.1.1 no such user", 550, event_id=event.id
    )
    with pytest.raises(PermanentError, match="550"):
        await world.handle(message_for(event, attempt=2))
    assert world.sender.sent == []
    [failed] = world.published
    assert (failed.type, failed.id) == ("email.failed.v1", outcome_event_id(event.id, "failed"))


async def test_a_missing_variable_records_publishes_email_failed_and_dead_letters_naming_it(
    world: World,
) -> None:
    event = request(subject=None, text=None, template="welcome", variables={})
    with pytest.raises(PermanentError, match="variable missing: 'name' is undefined"):
        await world.handle(message_for(event))
    assert world.sender.sent == []
    [failed] = world.published
    assert failed.data["permanent"] is True
    assert "smtp_code" not in failed.data
    assert "'name' is undefined" in failed.data["reason"]
    assert world.ledger.failed[event.id].kind == "invalid"


async def test_a_missing_template_is_named(world: World) -> None:
    event = request(subject=None, text=None, template="no-such-template")
    with pytest.raises(PermanentError, match="template 'no-such-template' not found"):
        await world.handle(message_for(event))


# -- pacing ----------------------------------------------------------------------------


async def test_a_short_wait_for_the_domain_rate_is_waited_out_in_process(world: World) -> None:
    world.throttle.waits = [300, 500]
    await world.handle(message_for(request()))
    assert world.slept == [0.3, 0.5]
    assert len(world.sender.sent) == 1


async def test_a_long_wait_for_the_domain_rate_reschedules_the_request(world: World) -> None:
    world.throttle.waits = [1_500, 1_500]
    with pytest.raises(RetryLater) as caught:
        await world.handle(message_for(request()))
    assert world.slept == [1.5]
    assert 1_500 <= caught.value.delay_ms <= 3_000
    assert caught.value.counts_as_delivery is False, "waiting for our pace is no attempt"
    assert world.sender.sent == []


async def test_a_rescheduled_request_on_its_last_attempt_is_not_given_up(world: World) -> None:
    world.throttle.waits = [5_000]
    last = message_for(request(), attempt=world.max_attempts)
    with pytest.raises(RetryLater):
        await world.handle(last)
    assert world.published == [], "no email.failed: the last attempt has not been made"


# -- Redis away: records and events ----------------------------------------------------


async def test_a_marker_write_that_fails_is_retried_before_the_handler_returns(
    world: World,
) -> None:
    world.ledger.failures = 7
    event = request()
    await world.handle(message_for(event))
    assert event.id in world.ledger.records
    assert world.ledger.writes == 8
    await world.handle(message_for(event, attempt=2))
    assert len(world.sender.sent) == 1


async def test_while_redis_is_away_the_handler_waits_and_a_redelivery_here_never_sends(
    world: World,
) -> None:
    world.ledger.failures = 10**9  # Redis away until the test says otherwise
    event = request()
    first = asyncio.create_task(world.handle(message_for(event)))
    await wait_for(lambda: world.ledger.writes > 20, what="the marker write to be retried")
    assert not first.done(), "the handler holds its entry while the marker is unwritten"
    assert world.published == []
    # the same request handed to this process again (another entry, a handler timeout)
    again = asyncio.create_task(world.handle(message_for(event, attempt=2)))
    await wait_for(lambda: world.ledger.writes > 40, what="more retries")
    assert not again.done()

    world.ledger.failures = 0  # Redis is back
    assert await first == []
    assert await again == []
    assert len(world.sender.sent) == 1
    assert [e.id for e in world.published] == [outcome_event_id(event.id, "sent")] * 2


async def test_a_handler_cut_off_while_its_marker_waits_leaves_the_writing_to_the_writer(
    world: World,
) -> None:
    world.ledger.failures = 10**9
    event = request()
    handler = asyncio.create_task(world.handle(message_for(event)))
    await wait_for(lambda: world.ledger.writes > 5, what="the marker write to be retried")
    handler.cancel()  # the runtime's handler timeout, or the shutdown drain
    with pytest.raises(asyncio.CancelledError):
        await handler
    assert world.delivery.recorder.unwritten(event.id) is not None
    world.ledger.failures = 0
    await wait_for(lambda: event.id in world.ledger.records, what="the writer to write it")
    assert len(world.delivery.recorder) == 0


async def test_records_still_unwritten_when_the_service_stops_are_named(world: World) -> None:
    world.ledger.failures = 10**9
    event = request()
    handler = asyncio.create_task(world.handle(message_for(event)))
    await wait_for(lambda: world.ledger.writes > 5, what="the marker write to be retried")
    handler.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handler
    assert await world.delivery.close() == [event.id]
    assert world.delivery.recorder.unwritten(event.id) is None


async def test_an_outcome_event_that_cannot_be_published_yet_is_retried_until_it_is(
    world: World,
) -> None:
    world.publish_failures = 6
    event = request()
    await world.handle(message_for(event))
    [sent] = world.published
    assert sent.id == outcome_event_id(event.id, "sent")


async def test_a_cancel_swallowed_inside_a_publish_still_ends_the_handler(world: World) -> None:
    # redis-py can turn a cancel landing inside a command into a connection error
    async def publish_swallowing_the_cancel(events: Sequence[CloudEvent]) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # the runtime's handler timeout, or the shutdown drain
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise RedisConnectionError("Connection closed by server.") from None

    world.delivery.reporter.publish = publish_swallowing_the_cancel
    with pytest.raises(asyncio.CancelledError):
        await world.handle(message_for(request()))
    assert len(world.sender.sent) == 1


async def test_a_give_up_whose_record_fails_is_retried_before_email_failed(world: World) -> None:
    world.sender.results = [SmtpResult(554, "5.7.1 refused by policy", "data")]
    world.ledger.failures = 5
    world.publish_failures = 3
    event = request()
    with pytest.raises(PermanentError):
        await world.handle(message_for(event))
    assert world.ledger.failed[event.id].reason == "554 5.7.1 refused by policy"
    assert [e.type for e in world.published] == ["email.failed.v1"]


async def test_a_request_another_replica_is_sending_is_not_sent_here(world: World) -> None:
    event = request()
    world.ledger.leases[event.id] = "another-replica"
    with pytest.raises(RetryLater) as caught:
        await world.handle(message_for(event, attempt=2))
    assert world.sender.sent == []
    assert world.published == []
    assert caught.value.counts_as_delivery is False, "waiting for a sibling is no attempt"
    assert 5_000 <= caught.value.delay_ms <= 5_500, "looked at again within seconds"
    assert world.ledger.leases[event.id] == "another-replica", "its lease is left alone"


async def test_the_lease_is_released_once_the_outcome_is_recorded(world: World) -> None:
    sent, refused = request(), request(to="bob@example.com")
    world.sender.results = [ACCEPTED, SmtpResult(550, "5.1.1 no such user", "rcpt")]
    await world.handle(message_for(sent))
    with pytest.raises(PermanentError):
        await world.handle(message_for(refused))
    assert world.ledger.released == [sent.id, refused.id]
    assert world.ledger.leases == {}


async def test_the_lease_is_kept_while_the_marker_waits_for_redis(world: World) -> None:
    world.ledger.failures = 10**9
    event = request()
    handler = asyncio.create_task(world.handle(message_for(event)))
    await wait_for(lambda: world.ledger.writes > 5, what="the marker write to be retried")
    handler.cancel()  # cut off: the lease must still keep other replicas off
    with pytest.raises(asyncio.CancelledError):
        await handler
    assert world.ledger.leases[event.id] == world.delivery.holder
    assert world.ledger.released == []


async def test_two_deliveries_of_one_request_in_one_process_send_once(world: World) -> None:
    world.sender.answer = asyncio.Event()  # the relay takes its time with the first
    event = request()
    first = asyncio.create_task(world.handle(message_for(event)))
    second = asyncio.create_task(world.handle(message_for(event, entry_id="0-2")))
    await wait_for(lambda: len(world.sender.sent) == 1, what="the first send under way")
    world.sender.answer.set()
    await asyncio.gather(first, second)
    assert len(world.sender.sent) == 1
    assert [e.type for e in world.published] == ["email.sent.v1", "email.sent.v1"]


# -- logs ------------------------------------------------------------------------------


async def test_logs_never_contain_the_body(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "json")
    world.sender.results = [ACCEPTED, SmtpResult(550, "5.1.1 no such user", "rcpt")]
    await world.handle(message_for(request()))
    with pytest.raises(PermanentError):
        await world.handle(message_for(request(html=f"<p>{SECRET_BODY}</p>")))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == [
        "accepted by the relay",
        "giving up on this email",
    ]
    assert SECRET_BODY not in repr(lines)
    assert all(line["to_domain"] == "example.com" for line in lines)
