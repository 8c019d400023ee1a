"""SMTP answers -> sent / retry / reject, by RFC 5321 reply classes and RFC 3463 codes."""

from __future__ import annotations

import pytest

from riverbed_email.domain.smtp_replies import SmtpResult, Stage, Verdict, classify, enhanced_status


def result(code: int | None, text: str = "", stage: Stage = "rcpt") -> SmtpResult:
    return SmtpResult(code, text, stage)


def test_a_2xx_to_the_data_is_sent() -> None:
    outcome = classify(result(250, "2.0.0 OK: queued as 12345", "data"))
    assert outcome.verdict is Verdict.SENT
    assert outcome.reason == "250 2.0.0 OK: queued as 12345"


@pytest.mark.parametrize("code", [421, 450, 451, 452])
def test_throttling_replies_are_retried_and_slow_the_domain_down(code: int) -> None:
    outcome = classify(result(code, "4.7.0 slow down"))
    assert (outcome.verdict, outcome.slow_down, outcome.suppress) == (Verdict.RETRY, True, False)
    assert outcome.retry_reason == "smtp_4xx"


@pytest.mark.parametrize("code", [447, 454, 455])
def test_other_4xx_replies_are_retried_without_slowing_down(code: int) -> None:
    outcome = classify(result(code, "4.4.7 timeout", "data"))
    assert (outcome.verdict, outcome.slow_down) == (Verdict.RETRY, False)


@pytest.mark.parametrize("stage", ["connect", "transaction"])
def test_no_reply_at_all_is_retried(stage: Stage) -> None:
    outcome = classify(result(None, "connection dropped: EOF", stage))
    assert outcome.verdict is Verdict.RETRY
    assert outcome.retry_reason == "no_reply"
    assert outcome.reason == f"no reply ({stage}): connection dropped: EOF"


@pytest.mark.parametrize(
    ("code", "text"),
    [(550, "5.1.1 no such user"), (551, "user not local"), (553, "mailbox name invalid")],
)
def test_a_5xx_to_the_recipient_is_rejected_and_suppresses_it(code: int, text: str) -> None:
    outcome = classify(result(code, text, "rcpt"))
    assert (outcome.verdict, outcome.suppress, outcome.code) == (Verdict.REJECT, True, code)


def test_a_policy_refusal_rejects_without_blaming_the_address() -> None:
    outcome = classify(result(554, "5.7.1 blocked by a block list", "rcpt"))
    assert (outcome.verdict, outcome.suppress) == (Verdict.REJECT, False)


def test_a_content_refusal_after_the_data_rejects_without_suppressing() -> None:
    outcome = classify(result(554, "transaction failed", "data"))
    assert (outcome.verdict, outcome.suppress) == (Verdict.REJECT, False)


def test_an_address_refusal_deferred_to_the_data_still_suppresses() -> None:
    outcome = classify(result(550, "5.1.1 unknown user", "data"))
    assert (outcome.verdict, outcome.suppress) == (Verdict.REJECT, True)


def test_a_refused_sender_rejects_without_suppressing_the_recipient() -> None:
    outcome = classify(result(553, "sender not allowed", "mail"))
    assert (outcome.verdict, outcome.suppress) == (Verdict.REJECT, False)


@pytest.mark.parametrize("code", [535, 554, 530])
def test_a_5xx_while_opening_the_session_is_our_relay_problem_and_retried(code: int) -> None:
    outcome = classify(result(code, "5.7.8 authentication failed", "connect"))
    assert outcome.verdict is Verdict.RETRY
    assert outcome.retry_reason == "session_5xx"


def test_an_address_our_side_cannot_express_is_rejected_without_a_code() -> None:
    outcome = classify(result(None, "address cannot be sent: non-ascii", "address"))
    assert (outcome.verdict, outcome.code, outcome.suppress) == (Verdict.REJECT, None, False)


def test_a_2xx_that_ends_no_transaction_is_not_taken_for_acceptance() -> None:
    assert classify(result(250, "OK", "rcpt")).verdict is Verdict.RETRY


def test_the_reason_is_one_bounded_line() -> None:
    outcome = classify(result(550, "5.1.1 no\r\n such   user " + "x" * 500))
    assert "\n" not in outcome.reason
    assert outcome.reason.startswith("550 5.1.1 no such user")
    assert len(outcome.reason) <= 304


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5.1.1 no such user", (5, 1, 1)), ("4.7.0 later", (4, 7, 0)), ("no code", None)],
)
def test_enhanced_status_codes_are_read_from_the_reply_text(
    text: str, expected: tuple[int, int, int] | None
) -> None:
    assert enhanced_status(text) == expected
