"""The aiosmtplib sender against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiosmtplib

from riverbed.testing import free_port
from riverbed_email.adapters.smtp import SmtpSender, result_of_transaction
from riverbed_email.domain.compose import OutgoingEmail, compose
from riverbed_email.domain.content import Content
from riverbed_email.domain.smtp_replies import Verdict, classify
from riverbed_email.testing import ScriptedSmtpServer

from .conftest import SmtpFactory, Tls, settings_for


def email_to(to: str, message_id: str = "<m-1@riverbed.test>") -> OutgoingEmail:
    return compose(
        Content("Hello", "Hi there\n", "<p>Hi there</p>\n"),
        to=to,
        from_address="Riverbed <no-reply@riverbed.test>",
        envelope_sender="no-reply@riverbed.test",
        message_id=message_id,
        date=datetime(2024, 5, 1, tzinfo=UTC),
        category="transactional",
    )


async def send(server: ScriptedSmtpServer, to: str, **settings: Any) -> Any:
    sender = SmtpSender(settings_for(server, **settings))
    try:
        return await sender.send(email_to(to))
    finally:
        await sender.aclose()  # the QUIT it left running in the background


async def test_a_250_is_an_acceptance_of_exactly_the_bytes_sent(
    smtp_server: ScriptedSmtpServer,
) -> None:
    email = email_to("ada@example.com")
    sender = SmtpSender(settings_for(smtp_server))
    result = await sender.send(email)
    await sender.aclose()
    assert classify(result).verdict is Verdict.SENT
    [received] = smtp_server.received
    assert received.mail_from == "no-reply@riverbed.test"
    assert received.rcpt_tos == ("ada@example.com",)
    assert received.content.rstrip(b"\r\n") == email.as_bytes().rstrip(b"\r\n")
    assert received.message_id == "<m-1@riverbed.test>"


async def test_a_451_to_the_recipient_is_reported_with_its_code(
    smtp_server: ScriptedSmtpServer,
) -> None:
    smtp_server.on("grey@example.com", "451")
    result = await send(smtp_server, "grey@example.com")
    assert (result.code, result.stage) == (451, "rcpt")
    assert classify(result).slow_down
    assert smtp_server.received == []


async def test_a_550_to_the_recipient_is_reported_with_its_code(
    smtp_server: ScriptedSmtpServer,
) -> None:
    smtp_server.on("gone@example.com", "550")
    result = await send(smtp_server, "gone@example.com")
    assert (result.code, result.text, result.stage) == (550, "5.1.1 no such user", "rcpt")
    assert classify(result).suppress


async def test_a_dropped_connection_is_reported_as_no_reply(
    smtp_server: ScriptedSmtpServer,
) -> None:
    smtp_server.on("drop@example.com", "drop")
    result = await send(smtp_server, "drop@example.com")
    assert result.code is None
    assert "connection dropped" in result.text
    assert classify(result).verdict is Verdict.RETRY


async def test_a_server_that_stops_answering_times_out_as_no_reply(
    smtp_server: ScriptedSmtpServer,
) -> None:
    smtp_server.on("slow@example.com", "hang")
    result = await send(smtp_server, "slow@example.com", smtp_timeout_s=0.3)
    assert result.code is None
    assert "timed out" in result.text


async def test_a_drop_after_the_data_is_ambiguous_the_relay_may_have_the_mail(
    smtp_server: ScriptedSmtpServer,
) -> None:
    smtp_server.on("maybe@example.com", "data:drop")
    result = await send(smtp_server, "maybe@example.com")
    assert classify(result).verdict is Verdict.RETRY  # we cannot know: SMTP's known window
    assert len(smtp_server.received) == 1


async def test_a_refused_connection_is_reported_as_no_reply_while_connecting() -> None:
    server = ScriptedSmtpServer(port=free_port())  # never started: nothing listens
    result = await send(server, "ada@example.com")
    assert (result.code, result.stage) == (None, "connect")
    assert "could not connect" in result.text


async def test_starttls_and_auth_reach_a_server_that_requires_both(
    start_smtp: SmtpFactory, tls: Tls
) -> None:
    server = await start_smtp(starttls=tls.server_context, credentials={"relay-user": "s3cret"})
    result = await send(
        server,
        "ada@example.com",
        smtp_security="starttls",
        smtp_ca_file=tls.ca_file,
        smtp_username="relay-user",
        smtp_password="s3cret",
    )
    assert classify(result).verdict is Verdict.SENT, result
    [received] = server.received
    assert received.tls
    assert received.authenticated_as == "relay-user"


async def test_implicit_tls_reaches_a_port_465_style_server(
    start_smtp: SmtpFactory, tls: Tls
) -> None:
    server = await start_smtp(implicit_tls=tls.server_context)
    result = await send(server, "ada@example.com", smtp_security="tls", smtp_ca_file=tls.ca_file)
    assert classify(result).verdict is Verdict.SENT, result
    assert len(server.received) == 1


async def test_an_untrusted_certificate_is_refused_and_nothing_is_sent(
    start_smtp: SmtpFactory, tls: Tls
) -> None:
    server = await start_smtp(starttls=tls.server_context)
    result = await send(server, "ada@example.com", smtp_security="starttls")  # no CA file
    assert (result.code, result.stage) == (None, "connect")
    assert "TLS failed" in result.text
    assert classify(result).verdict is Verdict.RETRY
    assert server.received == []


async def test_required_starttls_is_never_skipped_for_a_server_without_it(
    smtp_server: ScriptedSmtpServer,
) -> None:
    result = await send(smtp_server, "ada@example.com", smtp_security="starttls")
    assert result.stage == "connect"
    assert classify(result).verdict is Verdict.RETRY
    assert smtp_server.received == []


async def test_wrong_credentials_are_a_session_problem_retried_not_a_rejection(
    start_smtp: SmtpFactory, tls: Tls
) -> None:
    server = await start_smtp(starttls=tls.server_context, credentials={"relay-user": "s3cret"})
    result = await send(
        server,
        "ada@example.com",
        smtp_security="starttls",
        smtp_ca_file=tls.ca_file,
        smtp_username="relay-user",
        smtp_password="wrong",
    )
    assert (result.code, result.stage) == (535, "connect")
    outcome = classify(result)
    assert (outcome.verdict, outcome.suppress) == (Verdict.RETRY, False)


def test_a_partial_refusal_returned_instead_of_raised_is_a_refusal() -> None:
    refused = {"Ada@Example.com": aiosmtplib.SMTPResponse(550, "5.1.1 no such user")}
    result = result_of_transaction("ada@example.com", refused, "2.0.0 OK")
    assert (result.code, result.stage) == (550, "rcpt")
    assert classify(result).verdict is Verdict.REJECT


def test_a_transaction_with_no_refusals_is_an_acceptance() -> None:
    result = result_of_transaction("ada@example.com", {}, "2.0.0 OK: queued")
    assert (result.code, result.text, result.stage) == (250, "2.0.0 OK: queued", "data")


async def test_an_address_that_cannot_be_expressed_in_ascii_is_rejected_unsent(
    smtp_server: ScriptedSmtpServer,
) -> None:
    result = await send(smtp_server, "jörg@example.com")
    assert (result.code, result.stage) == (None, "address")
    assert classify(result).verdict is Verdict.REJECT
    assert smtp_server.received == []
