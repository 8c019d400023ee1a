"""Outcome event ids: the same fact always has the same id, different facts never share one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from riverbed_contracts import CloudEvent, WebhookDelivered
from riverbed_contracts.webhooks import WebhookDeliveryExhausted
from riverbed_webhooks import SOURCE
from riverbed_webhooks.domain.model import DisabledReason
from riverbed_webhooks.domain.outcomes import (
    delivery_exhausted,
    delivery_succeeded,
    disabled_event_id,
    endpoint_disabled,
    exhausted_event_id,
    succeeded_event_id,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CAUSE = CloudEvent(id="task-1", type="webhook.delivery.requested.v1", data={}, correlationid="c")


def test_ids_are_pinned_values_so_an_upgrade_reports_a_fact_under_the_id_it_had() -> None:
    # exhausted and disabled ids are what the service derived before the outbox; a change
    # of namespace or recipe would make a repeat across a deploy look like a new fact
    assert exhausted_event_id("task-1") == "ef8cd079-1edd-5321-8745-7f81eadd3d1a"
    assert disabled_event_id("ep_1", T0) == "164baa56-1e17-5dd0-bc74-b2a501bf829b"
    assert succeeded_event_id("dlv_1", "task-1") == "2b44c4a3-a62a-5609-b1b3-180961b3ca48"


def test_the_same_fact_has_the_same_id_and_another_fact_another() -> None:
    assert succeeded_event_id("dlv_1", "task-1") == succeeded_event_id("dlv_1", "task-1")
    succeeded = {
        succeeded_event_id("dlv_1", "task-1"),
        succeeded_event_id("dlv_1", "task-2"),  # a replay of the delivery: a new success
        succeeded_event_id("dlv_2", "task-1"),
    }
    assert len(succeeded) == 3
    assert exhausted_event_id("task-1") != exhausted_event_id("task-2")
    assert disabled_event_id("ep_1", T0) != disabled_event_id("ep_1", T0 + timedelta(seconds=1))
    assert disabled_event_id("ep_1", T0) != disabled_event_id("ep_2", T0)
    # the kinds never collide, even on equal inputs
    assert succeeded_event_id("x", "y") != exhausted_event_id("y")


def test_a_disabling_has_one_id_whatever_the_time_zone_it_is_given_in() -> None:
    elsewhere = T0.astimezone(timezone(timedelta(hours=2)))
    assert disabled_event_id("ep_1", elsewhere) == disabled_event_id("ep_1", T0)


def test_built_events_carry_their_derived_id_cause_source_and_subject() -> None:
    delivered = WebhookDelivered(delivery_id="dlv_1", endpoint_id="ep_1", event_id="evt_1",
                                 attempt=2, status_code=204, duration_ms=5)  # fmt: skip
    succeeded = delivery_succeeded(delivered, task_id="task-1", cause=CAUSE)
    assert succeeded.id == succeeded_event_id("dlv_1", "task-1")
    assert (succeeded.type, succeeded.subject, succeeded.source) == (
        "webhook.delivery.succeeded.v1", "ep_1", SOURCE,
    )  # fmt: skip
    assert (succeeded.causationid, succeeded.correlationid) == ("task-1", "c")
    again = delivery_succeeded(delivered, task_id="task-1", cause=CAUSE)
    assert again.id == succeeded.id, "built again (a redelivery): the same id"

    exhausted = delivery_exhausted(
        WebhookDeliveryExhausted(
            delivery_id="dlv_1",
            endpoint_id="ep_1",
            event_id="evt_1",
            attempts=3,
            last_error="HTTP 500",
        ),
        task_id="task-1",
        cause=CAUSE,
    )
    assert exhausted.id == exhausted_event_id("task-1")

    disabled = endpoint_disabled("ep_1", DisabledReason.GONE, T0, last_status_code=410)
    assert disabled.id == disabled_event_id("ep_1", T0)
    assert (disabled.data["reason"], disabled.subject) == ("gone", "ep_1")
