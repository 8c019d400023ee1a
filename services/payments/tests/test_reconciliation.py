"""Reconciling a settlement report over the API and the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio

from riverbed import keys
from riverbed.publisher import Publisher
from riverbed.testing import wait_for
from riverbed_contracts import CloudEvent, event_from_entry
from riverbed_payments.cli import DISCREPANCIES, reconcile
from riverbed_payments.keys import reconciliation_lease_key
from riverbed_payments.testing import payout, refunded, report_csv, report_line, succeeded

pytestmark = pytest.mark.integration

LEDGER_EVENTS = [
    succeeded("pi_1", 1999, fee_amount=59),
    succeeded("pi_2", 1000),  # the gateway's events carry no fee: matched on gross
    succeeded("pi_3", 500, fee_amount=20),
    succeeded("pi_4", 800),  # never reaches the provider's report
    succeeded("pi_6", 300),
    payout("po_1", 3665),
]
REPORT = [
    report_line("txn_01", "charge", "pi_1", 1999, 59, payout_id="po_1"),
    report_line("txn_02", "charge", "pi_2", 1000, 30, payout_id="po_1"),
    report_line("txn_03", "charge", "pi_3", 600, 20, payout_id="po_1"),  # 500 in the ledger
    report_line("txn_04", "refund", "re_1", -500, payout_id="po_1"),
    report_line("txn_05", "charge", "pi_5", 700, 25, payout_id="po_1"),  # not in the ledger
    report_line("txn_06", "payout", "po_1", -3665, payout_id="po_1"),
    report_line("txn_07", "charge", "pi_6", 300, payout_id="po_2"),
    report_line("txn_08", "payout", "po_2", -250, payout_id="po_2"),  # 300 - 0 != 250
]


async def _ledger(running: Any, redis_client: redis.asyncio.Redis) -> None:
    publisher = Publisher(redis_client)
    for event in [*LEDGER_EVENTS, refunded("pi_1", "re_1", 500)]:
        await publisher.publish(event, stream=running.stream(event.type.rsplit(".", 1)[0]))
        if event.type == "payment.succeeded.v1":
            pid = event.data["provider_payment_id"]
            await wait_for(lambda pid=pid: _known(running, pid), what=f"{pid} recorded")

    async def all_recorded() -> bool:
        answer = await running.client.get("/v1/transactions", params={"limit": 100})
        return len(answer.json()["data"]) == len(LEDGER_EVENTS) + 1

    await wait_for(all_recorded, what="the ledger filled")


async def _known(running: Any, pid: str) -> bool:
    answer = await running.client.get(f"/v1/payments/stripe/{pid}")
    return bool(answer.status_code == 200)


async def _completed(running: Any, report_id: str) -> dict[str, Any]:
    async def done() -> bool:
        answer = await running.client.get(f"/v1/reconciliations/{report_id}")
        return bool(answer.json()["status"] != "processing")

    await wait_for(done, what="the reconciliation finished")
    report: dict[str, Any] = (await running.client.get(f"/v1/reconciliations/{report_id}")).json()
    return report


async def test_a_report_is_matched_classified_stored_and_its_findings_emitted(
    database: Any, start_service: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service(database)
    await _ledger(running, redis_client)
    answer = await running.client.post(
        "/v1/reconciliations",
        params={"provider": "stripe", "filename": "balance.csv"},
        content=report_csv(REPORT),
        headers={"Content-Type": "text/csv"},
    )
    assert answer.status_code == 202, answer.text
    report_id = answer.json()["id"]
    assert answer.headers["location"] == f"/v1/reconciliations/{report_id}"
    report = await _completed(running, report_id)
    assert {k: report[k] for k in (
        "status", "lines", "matched", "missing_in_ledger", "missing_at_provider",
        "amount_mismatch", "payouts", "payouts_unbalanced",
    )} == {
        "status": "completed", "lines": 8, "matched": 5, "missing_in_ledger": 2,
        "missing_at_provider": 1, "amount_mismatch": 1, "payouts": 2, "payouts_unbalanced": 1,
    }  # fmt: skip

    lines = (await running.client.get(f"/v1/reconciliations/{report_id}/lines")).json()["data"]
    by_source = {line["source"]: line for line in lines}
    assert {s: line["class"] for s, line in by_source.items()} == {
        "pi_1": "matched", "pi_2": "matched", "pi_3": "amount_mismatch", "re_1": "matched",
        "pi_5": "missing_in_ledger", "po_1": "matched", "pi_6": "matched",
        "po_2": "missing_in_ledger", "pi_4": "missing_at_provider",
    }  # fmt: skip
    assert (by_source["pi_3"]["amount"], by_source["pi_3"]["ledger_amount"]) == (600, 500)
    assert by_source["pi_4"]["line"] is None
    only = await running.client.get(
        f"/v1/reconciliations/{report_id}/lines", params={"class": "missing_in_ledger"}
    )
    assert [line["source"] for line in only.json()["data"]] == ["pi_5", "po_2"]
    payouts = (await running.client.get(f"/v1/reconciliations/{report_id}/payouts")).json()
    assert [(p["payout_id"], p["balanced"]) for p in payouts["data"]] == [
        ("po_1", True),
        ("po_2", False),
    ]
    assert payouts["data"][0]["gross"] == 1999 + 1000 + 600 + 700

    async def emitted(logical: str) -> list[CloudEvent]:
        key = keys.stream_key(running.stream(logical))
        return [event_from_entry(f) for _, f in await redis_client.xrange(key)]

    await wait_for(lambda: emitted("payment.reconciliation.completed"), what="the completed event")
    [completed] = await emitted("payment.reconciliation.completed")
    assert (completed.data["report_id"], completed.data["status"]) == (report_id, "discrepancies")
    mismatches = await emitted("payment.reconciliation.mismatch")
    assert sorted((m.data["kind"], m.data["source"]) for m in mismatches) == [
        ("amount_mismatch", "pi_3"),
        ("missing_at_provider", "pi_4"),
        ("missing_in_ledger", "pi_5"),
        ("missing_in_ledger", "po_2"),
        ("payout_unbalanced", "po_2"),
    ]
    assert len({m.id for m in mismatches}) == 5


@pytest.mark.parametrize(
    ("body", "line", "why"),
    [
        (report_csv([report_line("t1", "charge", "pi_1", 100)], header=("id", "type")), 1, "lacks"),
        (
            report_csv(
                [
                    *REPORT[:3],
                    ("t9", "charge", "pi_9", "1.00", "0.10", "1.00", "eur", "", "2024-05-01"),
                ]
            ),
            5,
            "amount - fee != net",
        ),
        (b"", None, "empty"),
    ],
    ids=["header", "arithmetic", "empty"],
)
async def test_an_unreadable_report_is_refused_whole_naming_the_line(
    start_service: Any, body: bytes, line: int | None, why: str
) -> None:
    running = await start_service()
    answer = await running.client.post(
        "/v1/reconciliations", params={"provider": "stripe"}, content=body,
        headers={"Content-Type": "text/csv"},
    )  # fmt: skip
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert why in problem["detail"]
    assert problem.get("line") == line
    [stored] = (await running.client.get("/v1/reconciliations")).json()["data"]
    assert stored["status"] == "failed"
    assert why in stored["error"]


async def test_the_cli_streams_a_report_and_reports_the_discrepancies(
    start_service: Any, redis_client: redis.asyncio.Redis, tmp_path: Path
) -> None:
    running = await start_service()
    await _ledger(running, redis_client)
    path = tmp_path / "balance.csv"
    path.write_bytes(report_csv(REPORT))
    out = io.StringIO()
    code = await reconcile(
        path,
        provider="stripe",
        base_url="http://payments",
        api_key=running.settings.api_key.get_secret_value(),
        out=out,
        transport=httpx.ASGITransport(app=running.service.app),
    )
    assert code == DISCREPANCIES, out.getvalue()
    printed = out.getvalue()
    assert '"matched": 5' in printed
    assert "missing_in_ledger" in printed
    assert "pi_5" in printed
    # a report of another day that agrees with the ledger: exit 0
    balanced = tmp_path / "balanced.csv"
    line = report_line("t1", "charge", "pi_6", 300, created="2024-05-02 09:00:00")
    balanced.write_bytes(report_csv([line]))
    out = io.StringIO()
    code = await reconcile(
        balanced,
        provider="stripe",
        base_url="http://payments",
        api_key=running.settings.api_key.get_secret_value(),
        out=out,
        transport=httpx.ASGITransport(app=running.service.app),
    )
    assert code == 0, out.getvalue()
    assert '"status": "completed"' in out.getvalue()


async def _received(running: Any) -> str:
    """A report stored and waiting to be matched, as a replica that crashed left it."""

    async def body() -> Any:
        yield report_csv(REPORT)

    report_id: str = await running.service.container.reconciler.receive("stripe", body())
    return report_id


async def test_a_report_another_replica_holds_is_left_to_it_until_its_lease_lapses(
    start_service: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service(reconciliation_sweep_s=3_600)  # no sweep during the test
    jobs = running.service.container.jobs
    report_id = await _received(running)
    lease = reconciliation_lease_key(report_id)
    await redis_client.set(lease, "another-replica", px=60_000)

    jobs.start(report_id)
    await wait_for(lambda: not jobs.tasks, what="the job to give way")
    answer = await running.client.get(f"/v1/reconciliations/{report_id}")
    assert answer.json()["status"] == "processing", "not matched while another replica holds it"

    await redis_client.delete(lease)  # that replica died and its lease lapsed
    jobs.start(report_id)
    report = await _completed(running, report_id)
    assert (report["status"], report["lines"]) == ("completed", len(REPORT))
    assert await redis_client.exists(lease) == 0, "the lease is given back"


async def test_the_sweep_resumes_a_report_left_unfinished(start_service: Any) -> None:
    running = await start_service(reconciliation_sweep_s=0.05)
    report_id = await _received(running)  # stored, but no job was started for it
    report = await _completed(running, report_id)
    assert report["status"] == "completed"


async def test_a_line_cursor_outside_the_64_bit_row_ids_is_a_422_stating_the_range(
    database: Any, start_service: Any
) -> None:
    # `database` first: fixtures tear down in reverse, so the service (and the report job
    # it is running) stops before the scratch schema is dropped
    running = await start_service(database)
    submitted = await running.client.post(
        "/v1/reconciliations",
        params={"provider": "stripe"},
        content=report_csv([report_line("txn_01", "charge", "pi_1", 1999, 59)]),
    )
    assert submitted.status_code == 202, submitted.text
    lines = f"/v1/reconciliations/{submitted.json()['id']}/lines"
    for value in (str(2**63), str(10**30), "-1"):
        answer = await running.client.get(lines, params={"after": value})
        assert answer.status_code == 422, (value, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        [error] = answer.json()["errors"]
        assert error["loc"] == ["query", "after"]
        assert f"from 0 to {2**63 - 1}" in error["msg"]
    largest = await running.client.get(lines, params={"after": str(2**63 - 1)})
    assert largest.status_code == 200, largest.text
    assert largest.json()["data"] == []
