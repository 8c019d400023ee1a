"""The chaos suite's judge (``tests/chaos/chaos_judge.py``): given recorded effects and
faults, it must count lost and doubled facts right and blame only what no accepted window
explains. A broken judge would let ``make chaos`` pass a broken stack, so it is tested here,
in ``make test``, without running any service."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


def _load(name: str) -> ModuleType:
    # by path: tests/ is not a package, and pytest runs with --import-mode=importlib
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


j = _load("chaos_judge")
Fault, Observed, StreamItem = j.Fault, j.Observed, j.StreamItem

T = 1_700_000_000.0  # s since the epoch: any fixed time


def at(seconds: float) -> float:
    return T + seconds


# -- one row -----------------------------------------------------------------------------


def test_each_fact_is_once_doubled_dead_lettered_pending_or_lost() -> None:
    facts = {k: at(0) for k in ("once", "twice", "dead", "held", "gone")}
    effects = {
        "once": [Observed(at(1))],
        "twice": [Observed(at(1)), Observed(at(2))],
        "stray": [Observed(at(1))],  # an effect of nothing accepted
    }
    result = j.judge_row("email", facts, effects, dead={"dead"}, pending={"held"})
    assert (result.accepted, result.once, result.dead_lettered, result.pending) == (5, 1, 1, 1)
    assert [f.key for f in result.lost] == ["gone"]
    assert [f.key for f in result.doubled] == ["twice"]
    assert result.unexpected == 1
    assert len(result.defects) == 2, "nothing explains the loss or the double without faults"


def test_a_fact_with_an_effect_is_judged_by_it_even_if_also_dead_lettered() -> None:
    result = j.judge_row("email", {"k": at(0)}, {"k": [Observed(at(1))]}, dead={"k"})
    assert (result.once, result.dead_lettered) == (1, 0)


def test_a_double_just_before_a_kill_of_its_service_is_in_the_crash_window() -> None:
    kill = Fault("kill9", "email", at(10.0), at(12.0))
    effects = {"k": [Observed(at(9.6), "<m@x>"), Observed(at(13.0), "<m@x>")]}
    result = j.judge_row("email", {"k": at(0)}, effects, faults=[kill])
    [finding] = result.doubled
    assert finding.window == "email-killed-between-250-and-marker"
    assert finding.idents == ("<m@x>", "<m@x>")
    assert not result.defects


@pytest.mark.parametrize(
    ("first", "repeat", "why"),
    [
        (7.0, 13.0, "sent 3 s before the kill: its marker was written long before"),
        (11.0, 13.0, "sent after the kill: not by the killed process"),
        (9.6, 9.8, "repeated before the kill: the kill cannot explain it"),
    ],
)
def test_a_double_outside_the_crash_window_is_a_defect(
    first: float, repeat: float, why: str
) -> None:
    kill = Fault("kill9", "email", at(10.0), at(12.0))
    effects = {"k": [Observed(at(first)), Observed(at(repeat))]}
    result = j.judge_row("email", {"k": at(0)}, effects, faults=[kill])
    assert [f.window for f in result.doubled] == [None], why


@pytest.mark.parametrize(
    ("before_kill", "recorded", "window"),
    [
        (6.0, False, True),  # the handler died before it recorded the 2xx
        (6.0, True, False),  # recorded: the service knew, and delivered again
        (6.0, None, False),  # not known: not explained
        (40.0, False, False),  # too long before the kill to be that handler
    ],
)
def test_a_webhook_repeated_across_a_kill_is_explained_only_if_never_recorded(
    before_kill: float, recorded: bool | None, window: bool
) -> None:
    kill = Fault("kill9", "webhooks", at(100.0), at(110.0))
    first = Observed(at(100.0 - before_kill), "wh", recorded=recorded)
    effects = {"k": [first, Observed(at(111.0), "wh", recorded=True)]}
    result = j.judge_row("hook.source", {"k": at(0)}, effects, faults=[kill])
    expected = "webhooks-killed-before-recording-2xx" if window else None
    assert [f.window for f in result.doubled] == [expected]


def test_two_recorded_deliveries_at_once_are_a_defect_even_after_a_kill() -> None:
    kill = Fault("kill9", "webhooks", at(100.0), at(110.0))
    both = [Observed(at(171.0), "wh", recorded=True), Observed(at(171.01), "wh", recorded=True)]
    assert j.judge_row("hook.source", {"k": at(0)}, {"k": both}, faults=[kill]).defects


def test_a_2xx_the_delivery_log_lacks_is_explained_by_the_kill_it_preceded() -> None:
    records = j.Records()
    records.source_events = {"wh": at(0)}
    records.hooks = [
        j.Delivered("wh", "payment.succeeded.v1", {}, 200, at(140.0), at(140.0), False),
        j.Delivered("wh", "payment.succeeded.v1", {}, 200, at(146.9), at(146.9), False),
    ]
    kill = Fault("kill9", "webhooks", at(140.0), at(144.5))
    records.delivery_log = {"wh": [at(146.8)]}  # only the redelivery was logged
    [result] = [r for r in j.build_results(records, [kill]) if r.row == "hook.source"]
    assert [f.window for f in result.doubled] == ["webhooks-killed-before-recording-2xx"]
    records.delivery_log = {"wh": [at(140.1), at(146.8)]}  # both logged: it knew
    [result] = [r for r in j.build_results(records, [kill]) if r.row == "hook.source"]
    assert [f.window for f in result.doubled] == [None]


def test_the_delivery_log_accounts_for_the_2xx_it_recorded() -> None:
    # two answers, one logged 2 s after the second (a loaded loop), none for the first
    assert j.match_recorded([at(10.0), at(50.0)], [at(52.0)]) == [False, True]
    # one log entry accounts for one answer only, the closest
    assert j.match_recorded([at(10.0), at(10.3)], [at(10.5)]) == [False, True]
    assert j.match_recorded([at(10.0)], [at(7.0)]) == [False], "logged before the answer"
    # a 2xx at the kill, never logged, and the redelivery's, logged just before the
    # receiver's clock read its answer
    assert j.match_recorded([at(140.0), at(146.93)], [at(146.84)]) == [False, True]


def test_a_kill_of_another_service_explains_nothing() -> None:
    kill = Fault("kill9", "webhooks", at(10.0), at(12.0))
    effects = {"k": [Observed(at(9.8)), Observed(at(13.0))]}
    assert j.judge_row("email", {"k": at(0)}, effects, faults=[kill]).defects


def test_a_sigterm_opens_no_window() -> None:
    drain = Fault("sigterm", "payments", at(10.0), at(15.0))
    effects = {"k": [Observed(at(9.9)), Observed(at(16.0))]}
    result = j.judge_row("ledger.payment", {"k": at(0)}, effects, faults=[drain])
    assert [f.window for f in result.doubled] == [None]


def test_every_repeat_of_a_triple_must_be_explained() -> None:
    kill = Fault("kill9", "webhooks", at(10.0), at(12.0))
    explained_once = [Observed(at(9.8)), Observed(at(13.0)), Observed(at(14.0))]
    result = j.judge_row("hook.source", {"k": at(0)}, {"k": explained_once}, faults=[kill])
    assert [f.window for f in result.doubled] == [None]


def test_a_late_2xx_explains_a_webhook_repeat_but_not_a_mail() -> None:
    effects = {"k": [Observed(at(17.0), "wh", late=True), Observed(at(20.0), "wh")]}
    hook = j.judge_row("hook.source", {"k": at(0)}, effects)
    assert [f.window for f in hook.doubled] == ["webhook-2xx-after-timeout"]
    mail = j.judge_row("email", {"k": at(0)}, effects)
    assert [f.window for f in mail.doubled] == [None]


def test_a_late_2xx_answered_after_the_retry_it_caused_is_still_explained() -> None:
    records = j.Records()
    records.source_events = {"wh": at(0)}
    records.hooks = [
        # attempt 1 comes at 1 s and is answered at 18 s, after the sender gave up at 16 s
        j.Delivered("wh", "payment.succeeded.v1", {}, 200, at(1), at(18), True),
        # attempt 2, at 17 s, answered at once
        j.Delivered("wh", "payment.succeeded.v1", {}, 200, at(17), at(17.01), False),
    ]
    results = {r.row: r for r in j.build_results(records, [])}
    assert [f.window for f in results["hook.source"].doubled] == ["webhook-2xx-after-timeout"]
    assert results["webhook.delivery.succeeded"].accepted == 1, "one prompt 2xx: one fact"


def test_a_prompt_2xx_repeated_is_a_defect() -> None:
    effects = {"k": [Observed(at(1.0), "wh"), Observed(at(2.0), "wh", late=True)]}
    result = j.judge_row("hook.source", {"k": at(0)}, effects)
    assert [f.window for f in result.doubled] == [None], "only the earlier one being late counts"


def test_a_clean_redis_restart_explains_no_double() -> None:
    outage = Fault("shutdown", "redis", at(10.0), at(14.0))
    inside = {"k": [Observed(at(13.5)), Observed(at(20.0))]}
    for row in ("email", "receipt", "hook.source", "ledger.payment"):
        result = j.judge_row(row, {"k": at(0)}, inside, faults=[outage])
        assert [f.window for f in result.doubled] == [None], row


def test_a_redis_kill_may_lose_what_was_accepted_just_before_it() -> None:
    kill = Fault("kill9", "redis", at(100.0), at(102.0))
    facts = {"just-before": at(98.0), "long-before": at(90.0), "after": at(103.0)}
    result = j.judge_row("ledger.payment", facts, {}, faults=[kill])
    windows = {f.key: f.window for f in result.lost}
    assert windows == {
        "just-before": "redis-kill-last-seconds",
        "long-before": None,
        "after": None,
    }


def test_a_clean_redis_restart_may_lose_nothing() -> None:
    outage = Fault("shutdown", "redis", at(100.0), at(102.0))
    result = j.judge_row("ledger.payment", {"k": at(99.5)}, {}, faults=[outage])
    assert [f.window for f in result.lost] == [None]


def test_a_redis_kill_may_repeat_an_effect_of_its_last_seconds() -> None:
    kill = Fault("kill9", "redis", at(100.0), at(102.0))
    effects = {"k": [Observed(at(98.5)), Observed(at(104.0))]}
    result = j.judge_row("hook.recorded", {"k": at(90)}, effects, faults=[kill])
    assert [f.window for f in result.doubled] == ["redis-kill-last-seconds"]


# -- outcome events ---------------------------------------------------------------------------


def test_outcome_copies_with_one_id_are_not_doubles_but_two_ids_are() -> None:
    effects, copies = j.outcome_effects(
        [
            ("a", "id-1", at(1)),
            ("a", "id-1", at(2)),  # republished after a crash: the same event
            ("b", "id-2", at(1)),
            ("b", "id-3", at(2)),  # one fact, two events
        ]
    )
    assert copies == 1
    result = j.judge_row("email.sent", {"a": at(0), "b": at(0)}, effects, copies=copies)
    assert result.once == 1
    assert [(f.key, f.idents) for f in result.doubled] == [("b", ("id-2", "id-3"))]
    assert result.copies == 1


# -- what streams still hold -----------------------------------------------------------------


def test_held_events_map_to_the_fact_of_their_group() -> None:
    paid = {"provider_payment_id": "pi_1", "amount": 100}
    items = [
        StreamItem("payment.succeeded", "payments", "payment.succeeded.v1", "e1", paid),
        StreamItem("payment.succeeded", "webhooks", "payment.succeeded.v1", "e2", paid),
        StreamItem("email.requested", "email", "email.requested.v1", "e3", {"to": "A@x.test"}),
        StreamItem(
            "webhook.delivery.requested",
            "webhooks",
            "webhook.delivery.requested.v1",
            "task",
            {"event": {"id": "e9", "type": "payment.recorded.v1", "data": paid}},
        ),
    ]
    found = j.in_flight_keys(items)
    assert found["ledger.payment"] == {"pi_1"}
    assert found["hook.source"] == {"e2"}
    assert found["email"] == {"a@x.test"}
    assert found["hook.recorded"] == {"recorded:pi_1"}


def test_a_retry_entry_belongs_to_the_group_it_names() -> None:
    fields = {"event": '{"id": "e1", "type": "payment.succeeded.v1", "data": {}}', "group": "g2"}
    item = j.item_from_fields("payment.succeeded", "g1", fields)
    assert item is not None
    assert (item.group, item.event_id) == ("g2", "e1")
    assert j.item_from_fields("payment.succeeded", "g1", {"other": "x"}) is None


def test_a_delay_store_item_belongs_to_the_group_its_member_names() -> None:
    event = '{"id": "e1", "type": "email.requested.v1", "data": {"to": "a@x.test"}}'
    [retry] = j.delay_store_items("email.requested", "retry:email:1-0", event, ["email", "x"])
    assert (retry.group, retry.event_id) == ("email", "e1")
    later = j.delay_store_items("email.requested", "event:e1", event, ["email", "x"])
    assert sorted(i.group for i in later) == ["email", "x"]
    older = '{"fields": ["event", ' + __import__("json").dumps(event) + ', "group", "email"]}'
    [old] = j.delay_store_items("email.requested", "retry:email:1-0", older, [])
    assert old.event_id == "e1"


def test_message_id_local_part() -> None:
    assert j.message_id_local_part("<abc-1@riverbed.localhost>") == "abc-1"


# -- the whole table from records --------------------------------------------------------------


def _records() -> Any:
    r = j.Records()
    r.emails = {"u1@d.test": at(0), "u2@d.test": at(0)}
    r.payments = {"pi_1": at(0)}
    r.source_events = {"ev-pi_1": at(0)}
    r.receipt_address = {"pi_1": "buyer1@r.test"}
    r.mails = [
        j.Mailed("<e1@h>", "u1@d.test", at(1)),
        j.Mailed("<r1@h>", "buyer1@r.test", at(3)),
        j.Mailed("<r1@h>", "buyer1@r.test", at(4)),  # the receipt twice
    ]
    r.ledger = [j.Booked("payment", "pi_1", "txn-1", at(2))]
    r.outcomes = {
        "email.sent": [j.Published("s1", {"to": "u1@d.test"}, at(1))],
        "payment.recorded": [
            j.Published("rec-1", {"provider_payment_id": "pi_1"}, at(2)),
            j.Published("rec-1", {"provider_payment_id": "pi_1"}, at(2.5)),
        ],
    }
    r.hooks = [
        j.Delivered("ev-pi_1", "payment.succeeded.v1", {}, 500, at(2), at(2), False),  # no effect
        j.Delivered("ev-pi_1", "payment.succeeded.v1", {}, 200, at(3), at(3), False),
        j.Delivered(
            "rec-1",
            "payment.recorded.v1",
            {"provider_payment_id": "pi_1"},
            200,
            at(4),
            at(4),
            False,
        ),
    ]
    r.held = [
        StreamItem("email.requested", "email", "email.requested.v1", "e2", {"to": "u2@d.test"})
    ]
    return r


def test_build_results_counts_every_row() -> None:
    results = {r.row: r for r in j.build_results(_records(), [])}
    email = results["email"]
    assert (email.accepted, email.once, email.pending, email.lost) == (2, 1, 1, [])
    receipt = results["receipt"]
    assert (receipt.accepted, len(receipt.doubled)) == (1, 1)
    assert receipt.doubled[0].window is None
    sent = results["email.sent"]
    assert (sent.accepted, sent.once) == (2, 1)
    assert [f.key for f in sent.lost] == ["buyer1@r.test"], "the receipt was mailed, unreported"
    assert (results["ledger.payment"].once, results["payment.recorded"].once) == (1, 1)
    assert results["payment.recorded"].copies == 1
    assert results["hook.source"].once == 1, "a 500 is not a delivery"
    assert results["hook.recorded"].once == 1
    assert results["webhook.delivery.succeeded"].accepted == 2
    assert (results["email"].unexpected, results["receipt"].unexpected) == (0, 0)
    verdict = j.verdict(list(results.values()), signature_failures=0, settled=True)
    assert not verdict.ok
    assert any("receipt: 1 doubled" in reason for reason in verdict.reasons)


def test_records_survive_json_and_judge_the_same() -> None:
    import json

    faults = [Fault("kill9", "email", at(3.5), at(5))]
    document = json.loads(json.dumps(j.records_to_json(_records(), faults)))
    records, loaded = j.records_from_json(document)
    assert loaded == faults
    assert j.build_results(records, loaded) == j.build_results(_records(), faults)


def test_a_mail_of_a_request_nobody_saw_accepted_is_unexpected_among_the_emails() -> None:
    records = _records()
    records.mails.append(j.Mailed("<x@h>", "user9@d.test", at(5)))  # its 202 never came
    results = {r.row: r for r in j.build_results(records, [])}
    assert (results["email"].unexpected, results["receipt"].unexpected) == (1, 0)


def test_the_verdict_passes_only_with_everything_explained() -> None:
    clean = j.judge_row("email", {"k": at(0)}, {"k": [Observed(at(1))]})
    assert j.verdict([clean], signature_failures=0, settled=True).ok
    assert not j.verdict([clean], signature_failures=1, settled=True).ok
    assert not j.verdict([clean], signature_failures=0, settled=False).ok
    kill = Fault("kill9", "redis", at(10), at(12))
    explained = j.judge_row("email", {"k": at(9)}, {}, faults=[kill])
    assert j.verdict([explained], signature_failures=0, settled=True).ok


def test_the_table_marks_findings_and_names_every_row() -> None:
    results = j.build_results(_records(), [])
    table = j.render_table(results)
    for _, title in j.ROWS.values():
        assert title in table
    assert "| **1** |" in table, "a defect stands out"
    findings = j.render_findings(results, T)
    assert "receipt doubled buyer1@r.test (<r1@h>) at t=3.0, 4.0 s: DEFECT" in findings


# -- the windows cite the README ----------------------------------------------------------------


@pytest.mark.parametrize("window", j.ACCEPTED_WINDOWS, ids=lambda w: f"{w.name}-{w.applies_to}")
def test_every_accepted_window_cites_a_readme_section_that_exists(window: object) -> None:
    path, heading = window.readme  # type: ignore[attr-defined]
    text = (ROOT / path).read_text()
    assert any(
        line.lstrip("#").strip() == heading for line in text.splitlines() if line.startswith("#")
    ), f"{path} has no section {heading!r}"
    assert window.rows <= j.ALL_ROWS  # type: ignore[attr-defined]
