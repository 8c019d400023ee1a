"""Fan-out matching: filters, and ids that make redelivered fan-out idempotent."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from riverbed_webhooks.domain.matching import (
    InvalidFilter,
    delivery_id,
    endpoint_matches,
    fanout_task_id,
    filter_matches,
    matching_endpoint_ids,
    plan_tasks,
    validate_filter,
)
from riverbed_webhooks.domain.model import Endpoint

NOW = datetime(2024, 5, 1, tzinfo=UTC)


def endpoint(id_: str, *filters: str, enabled: bool = True) -> Endpoint:
    return Endpoint(
        id=id_,
        url="https://example.com",
        event_types=filters,
        enabled=enabled,
        secret="whsec_x",
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.mark.parametrize(
    ("pattern", "event_type", "matches"),
    [
        ("payment.succeeded.v1", "payment.succeeded.v1", True),
        ("payment.succeeded.v1", "payment.succeeded.v2", False),
        ("payment.succeeded", "payment.succeeded.v2", True),
        ("payment.succeeded", "payment.succeeded_late.v1", False),
        ("payment.*", "payment.refunded.v1", True),
        ("payment.*", "payments.refunded.v1", False),
        ("*", "email.sent.v1", True),
        ("payment", "payment.succeeded.v1", False),
    ],
)
def test_filter_matching(pattern: str, event_type: str, matches: bool) -> None:
    assert filter_matches(pattern, event_type) is matches


@pytest.mark.parametrize("bad", ["", "Payment.x", "payment.", "payment.*.v1", "a b", "*.x"])
def test_invalid_filters_are_refused_with_what_is_accepted(bad: str) -> None:
    with pytest.raises(InvalidFilter, match=r"payment\.succeeded\.v1"):
        validate_filter(bad)


def test_no_filters_means_everything_and_disabled_means_nothing() -> None:
    assert endpoint_matches(endpoint("a"), "payment.failed.v1")
    assert not endpoint_matches(endpoint("a", enabled=False), "payment.failed.v1")


def test_matching_endpoints_are_returned_in_id_order() -> None:
    found = matching_endpoint_ids(
        [endpoint("c", "payment.*"), endpoint("a"), endpoint("b", "email.*")],
        "payment.succeeded.v1",
    )
    assert found == ["a", "c"]


def test_ids_are_deterministic_per_event_and_endpoint() -> None:
    assert delivery_id("e1", "ep1") == delivery_id("e1", "ep1")
    assert delivery_id("e1", "ep1") != delivery_id("e1", "ep2")
    assert delivery_id("e1", "ep1") != delivery_id("e2", "ep1")
    assert delivery_id("e1", "ep1").startswith("dlv_")
    assert fanout_task_id("e1", "ep1") == fanout_task_id("e1", "ep1")
    assert fanout_task_id("e1", "ep1") != fanout_task_id("e1", "ep2")


def test_a_plan_has_one_task_per_endpoint() -> None:
    plan = plan_tasks("e1", ["ep1", "ep2"])
    assert [t.endpoint_id for t in plan] == ["ep1", "ep2"]
    assert plan == plan_tasks("e1", ["ep1", "ep2"])
    assert len({t.task_id for t in plan}) == 2
