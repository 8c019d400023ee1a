"""The SQL registry and delivery log on SQLite and PostgreSQL, migrated by Alembic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from riverbed_contracts import CloudEvent, WebhookDelivered
from riverbed_webhooks.adapters import migrate
from riverbed_webhooks.adapters.delivery_log import SqlDeliveryLog
from riverbed_webhooks.adapters.endpoint_repository import SqlEndpointRepository
from riverbed_webhooks.adapters.sql import create_engine
from riverbed_webhooks.adapters.tables import metadata, outbox
from riverbed_webhooks.domain.model import (
    Attempt,
    Delivery,
    DeliveryStatus,
    DisabledReason,
    Endpoint,
    new_id,
)
from riverbed_webhooks.domain.outcomes import delivery_succeeded, endpoint_disabled
from riverbed_webhooks.domain.signing import generate_secret

T0 = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)


@pytest.fixture
async def engine(database: Any) -> AsyncIterator[AsyncEngine]:
    """A migrated database (SQLite file or PostgreSQL schema of this test)."""
    engine = create_engine(database.url, schema=database.schema)
    assert await migrate.MIGRATIONS.upgrade(engine) == migrate.MIGRATIONS.head_revision()
    try:
        yield engine
    finally:
        await engine.dispose()


def endpoint(**fields: object) -> Endpoint:
    values: dict[str, object] = {
        "id": new_id("ep"),
        "url": "https://hooks.example.com/in",
        "event_types": ("payment.*",),
        "secret": generate_secret(),
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    return Endpoint.model_validate(values)


def delivery(endpoint_id: str, event_id: str, task_id: str, **fields: object) -> Delivery:
    values: dict[str, object] = {
        "delivery_id": f"dlv_{endpoint_id}_{event_id}",
        "endpoint_id": endpoint_id,
        "event_id": event_id,
        "event_type": "payment.succeeded.v1",
        "event": {"id": event_id, "type": "payment.succeeded.v1", "data": {"a": 1}},
        "status": DeliveryStatus.PENDING,
        "task_id": task_id,
        "attempts": 0,
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    return Delivery.model_validate(values)


def attempt(d: Delivery, n: int, *, status: int | None, at: datetime = T0) -> Attempt:
    return Attempt(
        delivery_id=d.delivery_id,
        task_id=d.task_id,
        endpoint_id=d.endpoint_id,
        event_id=d.event_id,
        attempt=n,
        attempted_at=at,
        succeeded=status is not None and 200 <= status < 300,
        status_code=status,
        duration_ms=10 * n,
        response_body="body",
        error=None if status == 200 else f"HTTP {status}",
    )


async def test_migrating_twice_is_a_no_op(engine: AsyncEngine) -> None:
    assert await migrate.MIGRATIONS.upgrade(engine) == migrate.MIGRATIONS.head_revision()
    assert await migrate.MIGRATIONS.current_revision(engine) == migrate.MIGRATIONS.head_revision()


async def test_an_endpoint_round_trips_with_aware_utc_times(engine: AsyncEngine) -> None:
    repo = SqlEndpointRepository(engine)
    made = endpoint(
        rate_limit_per_s=5,
        previous_secret=generate_secret(),
        previous_secret_expires_at=T0 + timedelta(hours=1),
    )
    await repo.add(made)
    assert await repo.get(made.id) == made
    assert await repo.get("ep_missing") is None


async def test_pages_list_by_id_and_enabled_excludes_disabled(engine: AsyncEngine) -> None:
    repo = SqlEndpointRepository(engine)
    made = [endpoint(id=f"ep_{i}") for i in range(5)]
    for e in made:
        await repo.add(e)
    first = await repo.page(limit=2)
    rest = await repo.page(limit=10, after=first[-1].id)
    assert [e.id for e in first + rest] == [f"ep_{i}" for i in range(5)]
    await repo.disable("ep_3", DisabledReason.MANUAL, T0)
    assert [e.id for e in await repo.list_enabled()] == ["ep_0", "ep_1", "ep_2", "ep_4"]
    assert await repo.count_disabled() == 1


async def test_save_writes_changes_and_delete_removes(engine: AsyncEngine) -> None:
    repo = SqlEndpointRepository(engine)
    made = endpoint()
    await repo.add(made)
    changed = made.model_copy(update={"url": "https://other.example.com", "event_types": ()})
    await repo.save(changed)
    assert await repo.get(made.id) == changed
    assert await repo.delete(made.id)
    assert not await repo.delete(made.id)
    assert await repo.get(made.id) is None


async def test_only_one_of_many_concurrent_disables_wins(engine: AsyncEngine) -> None:
    repo = SqlEndpointRepository(engine)
    made = endpoint()
    await repo.add(made)
    results = await asyncio.gather(
        *(repo.disable(made.id, DisabledReason.GONE, T0) for _ in range(5))
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert winners[0].disabled_reason is DisabledReason.GONE
    assert not winners[0].enabled


async def test_the_failure_clock_starts_once_and_a_success_or_enable_stops_it(
    engine: AsyncEngine,
) -> None:
    repo = SqlEndpointRepository(engine)
    made = endpoint()
    await repo.add(made)
    assert await repo.record_failure(made.id, T0) == T0
    assert await repo.record_failure(made.id, T0 + timedelta(days=1)) == T0
    await repo.record_success(made.id, T0 + timedelta(days=2))
    later = T0 + timedelta(days=3)
    assert await repo.record_failure(made.id, later) == later
    await repo.save(made, reset_health=True)
    assert await repo.failing_since(made.id) is None
    assert await repo.record_failure("ep_missing", T0) is None


async def test_attempts_are_logged_per_task_endpoint_and_event(engine: AsyncEngine) -> None:
    log = SqlDeliveryLog(engine)
    d = delivery("ep_a", "evt_1", "task_1")
    await log.begin_task(d)
    event = d.event
    await log.record_attempt(attempt(d, 1, status=500), DeliveryStatus.RETRYING,
                             event_type=d.event_type, event=event)  # fmt: skip
    await log.record_attempt(attempt(d, 2, status=200), DeliveryStatus.SUCCEEDED,
                             event_type=d.event_type, event=event)  # fmt: skip
    other = delivery("ep_b", "evt_1", "task_2")
    await log.record_attempt(attempt(other, 1, status=503), DeliveryStatus.RETRYING,
                             event_type=d.event_type, event=event)  # fmt: skip

    assert await log.attempts_in_task("task_1") == 2
    by_endpoint = await log.attempts_for_endpoint("ep_a", limit=10)
    assert [a.attempt for a in by_endpoint] == [2, 1]  # newest first
    older = await log.attempts_for_endpoint("ep_a", limit=10, before=by_endpoint[0].id)
    assert [a.attempt for a in older] == [1]
    by_event = await log.attempts_for_event("evt_1", limit=10)
    assert [(a.endpoint_id, a.status_code) for a in by_event] == [
        ("ep_a", 500), ("ep_a", 200), ("ep_b", 503)
    ]  # fmt: skip
    stored = await log.get_delivery(d.delivery_id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.last_status_code) == (
        DeliveryStatus.SUCCEEDED, 2, 200
    )  # fmt: skip
    made_without_begin = await log.get_delivery(other.delivery_id)
    assert made_without_begin is not None
    assert made_without_begin.attempts == 1
    assert [x.endpoint_id for x in await log.deliveries_for_event("evt_1")] == ["ep_a", "ep_b"]


async def test_begin_task_resets_status_only_for_a_new_task(engine: AsyncEngine) -> None:
    log = SqlDeliveryLog(engine)
    d = delivery("ep_a", "evt_1", "task_1")
    await log.begin_task(d)
    await log.set_status(d.delivery_id, DeliveryStatus.EXHAUSTED, error="boom", at=T0)
    await log.begin_task(d)  # the same task again: a redelivery changes nothing
    found = await log.get_delivery(d.delivery_id)
    assert found is not None
    assert found.status is DeliveryStatus.EXHAUSTED
    await log.begin_task(d.model_copy(update={"task_id": "task_2"}))  # a replay
    found = await log.get_delivery(d.delivery_id)
    assert found is not None
    assert (found.status, found.task_id) == (DeliveryStatus.PENDING, "task_2")


async def test_failed_deliveries_since_a_time_are_the_exhausted_and_dropped_ones(
    engine: AsyncEngine,
) -> None:
    log = SqlDeliveryLog(engine)
    rows = {
        "old": (DeliveryStatus.EXHAUSTED, T0 - timedelta(days=1)),
        "exhausted": (DeliveryStatus.EXHAUSTED, T0),
        "dropped": (DeliveryStatus.DROPPED, T0 + timedelta(hours=1)),
        "ok": (DeliveryStatus.SUCCEEDED, T0),
        "retrying": (DeliveryStatus.RETRYING, T0),
    }
    for name, (status, created) in rows.items():
        await log.begin_task(delivery("ep_a", name, f"t_{name}", status=status, created_at=created))
    await log.begin_task(delivery("ep_b", "elsewhere", "t_x", status=DeliveryStatus.EXHAUSTED))
    found = await log.failed_deliveries("ep_a", T0, limit=100)
    assert [d.event_id for d in found] == ["exhausted", "dropped"]
    listed = await log.deliveries_for_endpoint("ep_a", limit=10, status=[DeliveryStatus.DROPPED])
    assert [d.event_id for d in listed] == ["dropped"]


async def test_prune_deletes_only_finished_deliveries_older_than_the_cutoff_with_attempts(
    engine: AsyncEngine,
) -> None:
    log = SqlDeliveryLog(engine)
    old, recent = T0 - timedelta(days=40), T0 - timedelta(days=1)
    rows = {
        "old-ok": (DeliveryStatus.SUCCEEDED, old),
        "old-exhausted": (DeliveryStatus.EXHAUSTED, old),
        "old-dropped": (DeliveryStatus.DROPPED, old),
        "old-retrying": (DeliveryStatus.RETRYING, old),  # a task still works on it
        "old-pending": (DeliveryStatus.PENDING, old),
        "recent-ok": (DeliveryStatus.SUCCEEDED, recent),
    }
    for name, (status, updated) in rows.items():
        d = delivery("ep_a", name, f"t_{name}", created_at=updated, updated_at=updated)
        await log.begin_task(d)
        await log.record_attempt(
            attempt(d, 1, status=500, at=updated), status, event_type=d.event_type, event=d.event
        )

    cutoff = T0 - timedelta(days=30)
    assert await log.prune(cutoff, limit=2) == 2  # a batch at a time
    assert await log.prune(cutoff, limit=2) == 1
    assert await log.prune(cutoff, limit=2) == 0

    left = {d.event_id for d in await log.deliveries_for_endpoint("ep_a", limit=100)}
    assert left == {"old-retrying", "old-pending", "recent-ok"}
    attempted = {a.event_id for a in await log.attempts_for_endpoint("ep_a", limit=100)}
    assert attempted == left, "a pruned delivery's attempts go with it, the others stay"


# -- the outbox: outcome events committed with the records they report ----------------


async def outbox_rows(engine: AsyncEngine) -> list[tuple[str, str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(outbox.c.event_id, outbox.c.stream, outbox.c.type))
        return [tuple(row) for row in rows]


def succeeded_report(d: Delivery, task_id: str) -> CloudEvent:
    delivered = WebhookDelivered(
        delivery_id=d.delivery_id,
        endpoint_id=d.endpoint_id,
        event_id=d.event_id,
        attempt=1,
        status_code=200,
        duration_ms=3,
    )
    return delivery_succeeded(delivered, task_id=task_id, cause=None)


async def test_migrations_create_the_tables_as_the_code_declares_them(engine: AsyncEngine) -> None:
    def differences(sync: Any) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(sync), metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(differences) == []


async def test_an_outcome_and_its_report_are_committed_together_or_not_at_all(
    engine: AsyncEngine,
) -> None:
    commits: list[str] = []
    log = SqlDeliveryLog(engine, stream_for=lambda t: f"{t}.routed",
                         on_commit=lambda: commits.append("woken"))  # fmt: skip
    d = delivery("ep_a", "evt_1", "task_1")
    await log.begin_task(d)
    report = succeeded_report(d, "task_1")
    await log.record_attempt(attempt(d, 1, status=200), DeliveryStatus.SUCCEEDED,
                             event_type=d.event_type, event=d.event, emit=[report])  # fmt: skip
    assert await outbox_rows(engine) == [(report.id, f"{report.type}.routed", report.type)]
    assert commits == ["woken"]
    # the same outcome recorded again (two consumers raced on one task): one report
    await log.record_attempt(attempt(d, 2, status=200), DeliveryStatus.SUCCEEDED,
                             event_type=d.event_type, event=d.event, emit=[report])  # fmt: skip
    assert len(await outbox_rows(engine)) == 1

    def broken_route(event_type: str) -> str:
        raise RuntimeError("the process died while queueing the report")

    other = delivery("ep_b", "evt_2", "task_2")
    await log.begin_task(other)
    log.stream_for = broken_route
    with pytest.raises(RuntimeError, match="died"):
        await log.record_attempt(attempt(other, 1, status=200), DeliveryStatus.SUCCEEDED,
                                 event_type=other.event_type, event=other.event,
                                 emit=[succeeded_report(other, "task_2")])  # fmt: skip
    assert len(await outbox_rows(engine)) == 1, "no report without its record"
    stored = await log.get_delivery(other.delivery_id)
    assert stored is not None
    assert (stored.status, stored.attempts) == (DeliveryStatus.PENDING, 0), "nor the record"


async def test_of_many_concurrent_disables_only_the_winner_queues_its_report(
    engine: AsyncEngine,
) -> None:
    repo = SqlEndpointRepository(engine)
    made = endpoint()
    await repo.add(made)
    moments = [T0 + timedelta(seconds=i) for i in range(5)]  # each its own report id
    results = await asyncio.gather(*(
        repo.disable(made.id, DisabledReason.GONE, at,
                     report=endpoint_disabled(made.id, DisabledReason.GONE, at))
        for at in moments
    ))  # fmt: skip
    (winner,) = [r for r in results if r is not None]
    rows = await outbox_rows(engine)
    assert [(stream, kind) for _, stream, kind in rows] == [
        ("webhook.endpoint.disabled", "webhook.endpoint.disabled.v1")
    ]
    assert winner.disabled_at is not None
    assert rows[0][0] == endpoint_disabled(made.id, DisabledReason.GONE, winner.disabled_at).id
