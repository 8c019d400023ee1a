"""What leaves the service: every event it publishes carries ``source=riverbed_payments.SOURCE``
(``urn:riverbed:payments``), and ``/metrics``, served without a key, names no payment,
refund, payout, transaction or report.

Consumers drop an internal type whose ``source`` is not its producer's, so an event
published under another source would be dead-lettered by whoever reads it. Two checks of
the source: every place in the code that builds an event names ``SOURCE`` (so a new one
cannot forget it), and a run that makes every kind of event (a payment with its receipt, a
refund, reconciliation findings and its completion) finds nothing else on the streams the
service writes. The same run's exposition is then read with Prometheus' own parser.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from prometheus_client.parser import text_string_to_metric_families

import riverbed_payments
from riverbed import keys
from riverbed.publisher import Publisher
from riverbed.testing import wait_for
from riverbed_contracts import event_from_entry
from riverbed_payments.testing import refunded, report_csv, report_line, succeeded

SOURCE_DIR = Path(riverbed_payments.__file__).parent
#: calls that make an event: the registry's builder, the envelope, a follow-up of a cause
BUILDERS = {"new_event", "CloudEvent", "caused"}
#: the service's own builder (service_layer/events.py): it passes source=SOURCE to
#: new_event itself, which the check of BUILDERS covers
OWN_BUILDER = "own_event"
#: builds events as the gateway would publish them, for tests: not what the service sends
TEST_HELPERS = {"testing.py"}
PUBLISHED = (
    "payment.recorded",
    "payment.refund.recorded",
    "email.requested",
    "payment.reconciliation.completed",
    "payment.reconciliation.mismatch",
)
#: every label of this service's own metrics, and the values it may take (currency: an
#: ISO 4217 code the ledger accepted)
FIXED_LABELS: dict[str, set[str] | re.Pattern[str]] = {
    "type": {"payment", "refund", "dispute", "dispute_reversal", "dispute_loss", "payout"}
    | {f"{stream}.v1" for stream in PUBLISHED},
    "currency": re.compile(r"^[A-Z]{3}$"),
    "outcome": {"recorded", "already_processed", "already_recorded", "failure_recorded", "ignored"},
    "reason": {"invalid_amount", "out_of_order", "out_of_order_expired"},
    "class": {"matched", "missing_in_ledger", "missing_at_provider", "amount_mismatch"},
    "status": {"balanced", "discrepancies", "failed"},
    "le": re.compile(r"^([0-9.e+-]+|\+Inf)$"),
}


def event_builders() -> list[tuple[str, int, ast.Call]]:
    found = []
    for path in sorted(SOURCE_DIR.rglob("*.py")):
        if path.name in TEST_HELPERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in BUILDERS or name == OWN_BUILDER:
                found.append((str(path.relative_to(SOURCE_DIR)), node.lineno, node))
    return found


def test_every_event_the_code_builds_names_the_service_source() -> None:
    builders = event_builders()
    assert len(builders) >= 5  # recorded, refund recorded, receipt, completed, mismatch
    for where, line, call in builders:
        if getattr(call.func, "id", None) == OWN_BUILDER:
            continue
        sources = [k.value for k in call.keywords if k.arg == "source"]
        assert sources, f"{where}:{line} builds an event without source="
        assert isinstance(sources[0], ast.Name), f"{where}:{line}"
        assert sources[0].id == "SOURCE", f"{where}:{line} sets another source"
    assert riverbed_payments.SOURCE == "urn:riverbed:payments"


@pytest.mark.integration
async def test_what_it_publishes_has_its_source_and_its_metrics_name_nothing(
    start_service: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service()
    publisher = Publisher(redis_client)
    payment = succeeded("pi_leaky_7q", 2500, receipt_email="ada@example.com")
    refund = refunded("pi_leaky_7q", "re_leaky_7q", 500)
    await publisher.publish(payment, stream=running.stream("payment.succeeded"))

    async def known() -> bool:
        answer = await running.client.get("/v1/payments/stripe/pi_leaky_7q")
        return bool(answer.status_code == 200)

    await wait_for(known, what="the payment recorded")
    await publisher.publish(refund, stream=running.stream("payment.refunded"))
    report = report_csv(
        [
            report_line("txn_leaky_01", "charge", "pi_leaky_7q", 2500, payout_id="po_leaky_7q"),
            report_line("txn_leaky_02", "charge", "pi_leaky_absent", 900),
        ]
    )
    submitted = await running.client.post(
        "/v1/reconciliations",
        params={"provider": "stripe", "filename": "leaky-report.csv"},
        content=report,
        headers={"Content-Type": "text/csv"},
    )
    assert submitted.status_code == 202, submitted.text
    report_id = submitted.json()["id"]

    async def on(logical: str) -> list[Any]:
        entries = await redis_client.xrange(keys.stream_key(running.stream(logical)))
        return [event_from_entry(fields) for _, fields in entries]

    async def every_kind_published() -> bool:
        return all([await on(logical) for logical in PUBLISHED])

    await wait_for(every_kind_published, what="every kind of event on its stream")
    published = [e for logical in PUBLISHED for e in await on(logical)]
    wrong = [(e.type, e.id, e.source) for e in published if e.source != riverbed_payments.SOURCE]
    assert not wrong, f"events published under another source: {wrong}"

    identifiers = {"pi_leaky", "re_leaky", "po_leaky", "txn_leaky", "leaky-report", report_id}
    identifiers |= {payment.id, refund.id} | {e.id for e in published}
    transactions = (await running.client.get("/v1/transactions")).json()["data"]
    identifiers |= {t["id"] for t in transactions}
    exposition = (await running.client.get("/metrics")).text
    labelled = [
        (sample.name, label, value)
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        for label, value in sample.labels.items()
    ]
    leaks = [item for item in labelled if any(i in item[2] for i in identifiers)]
    assert not leaks, f"identifiers in metric labels: {leaks}"
    for sample, label, value in labelled:
        if not sample.startswith("riverbed_payments_"):
            continue
        allowed = FIXED_LABELS.get(label)
        assert allowed is not None, f"{sample} has a label outside the fixed sets: {label}"
        if isinstance(allowed, re.Pattern):
            assert allowed.match(value), (sample, label, value)
        else:
            assert value in allowed, (sample, label, value)
