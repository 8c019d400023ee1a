"""The MIME message: one recipient, multipart/alternative, stable Message-ID, RFC 8058 headers."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, cast

import pytest

from riverbed_email.domain.compose import OutgoingEmail, Unsubscribe, compose, message_id_for
from riverbed_email.domain.content import Content

WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def build(**overrides: Any) -> OutgoingEmail:
    values: dict[str, Any] = {
        "to": "ada@example.com",
        "from_address": "Riverbed <no-reply@riverbed.test>",
        "envelope_sender": "no-reply@riverbed.test",
        "message_id": "<ev-1@riverbed.test>",
        "date": WHEN,
        "category": "transactional",
    }
    content = overrides.pop("content", Content("Hello Ada", "Hi Ada\n", "<p>Hi Ada</p>\n"))
    values.update(overrides)
    return compose(content, **values)


def parsed(email: OutgoingEmail) -> EmailMessage:
    return cast(EmailMessage, message_from_bytes(email.as_bytes(), policy=policy.default))


def test_the_message_id_is_the_event_id_at_the_configured_domain() -> None:
    event_id = "6f1c3c1e-8f1e-4a43-9a8e-3f0a4a0b7d21"
    assert message_id_for(event_id, "mail.example.com") == f"<{event_id}@mail.example.com>"


@pytest.mark.parametrize("event_id", ["has space", "a@b", "<x>", "a..b", ".lead", "x" * 200])
def test_an_event_id_unfit_for_a_message_id_is_hashed_stably(event_id: str) -> None:
    first = message_id_for(event_id, "d.test")
    assert first == message_id_for(event_id, "d.test")
    local = first[1:-1].split("@")[0]
    assert local == hashlib.sha256(event_id.encode()).hexdigest()[:40]


def test_text_and_html_travel_as_multipart_alternative() -> None:
    message = parsed(build())
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    assert text_part is not None
    assert html_part is not None
    # on the wire lines end in CRLF, as SMTP wants
    assert text_part.get_content() == "Hi Ada\r\n"
    assert html_part.get_content() == "<p>Hi Ada</p>\r\n"


def test_text_only_content_is_a_single_part() -> None:
    message = parsed(build(content=Content("Hi", "Only text\n")))
    assert message.get_content_type() == "text/plain"


def test_headers_name_one_recipient_and_carry_the_derived_ids() -> None:
    email = build()
    message = parsed(email)
    assert (email.sender, email.recipient) == ("no-reply@riverbed.test", "ada@example.com")
    assert message["To"] == "ada@example.com"
    assert message["From"] == "Riverbed <no-reply@riverbed.test>"
    assert message["Message-ID"] == email.message_id == "<ev-1@riverbed.test>"
    assert message["Date"] == "Wed, 01 May 2024 12:00:00 +0000"


def test_the_same_request_gives_the_same_bytes_so_a_retry_is_the_same_message() -> None:
    assert build().as_bytes() == build().as_bytes()


def test_non_ascii_content_is_sent_7bit_safe_and_reads_back_the_same() -> None:
    email = build(content=Content("Grüße ✓", "Schöne Grüße\n", "<p>Grüße</p>\n"))
    raw = email.as_bytes()
    assert max(raw) < 128
    message = parsed(email)
    assert message["Subject"] == "Grüße ✓"
    body = message.get_body(("plain",))
    assert body is not None
    assert body.get_content() == "Schöne Grüße\r\n"


def test_bulk_mail_carries_one_click_unsubscribe_headers() -> None:
    unsubscribe = Unsubscribe("https://riverbed.test/unsubscribe?a={address}&t={token}", b"k")
    message = parsed(build(category="bulk", unsubscribe=unsubscribe, to="Ada+news@Example.com"))
    token = hmac.new(b"k", b"ada+news@example.com", hashlib.sha256).hexdigest()
    assert message["List-Unsubscribe"] == (
        f"<https://riverbed.test/unsubscribe?a=ada%2Bnews%40example.com&t={token}>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Precedence"] == "bulk"


def test_a_long_unsubscribe_url_is_not_folded_or_encoded() -> None:
    url = "https://riverbed.test/u/" + "x" * 150
    message = parsed(build(category="bulk", unsubscribe=Unsubscribe(url)))
    assert message["List-Unsubscribe"] == f"<{url}>"
    assert b"=?utf-8?" not in build(category="bulk", unsubscribe=Unsubscribe(url)).as_bytes()


def test_transactional_mail_has_no_unsubscribe_headers_even_when_configured() -> None:
    message = parsed(build(unsubscribe=Unsubscribe("https://riverbed.test/u")))
    assert message["List-Unsubscribe"] is None
    assert message["List-Unsubscribe-Post"] is None


def test_bulk_mail_without_a_configured_url_has_no_unsubscribe_headers() -> None:
    message = parsed(build(category="bulk"))
    assert message["List-Unsubscribe"] is None
