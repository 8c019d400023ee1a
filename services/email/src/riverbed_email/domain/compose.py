"""The MIME message of one request: headers, parts, Message-ID, List-Unsubscribe.

Pure functions of the request and its content, so a retry sends the very same bytes:
the ``Message-ID`` comes from the request's event id and ``Date`` from the event's time.
A receiver that gets a message twice (see the README's duplicate window) can tell.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import quote

from riverbed_email.domain.addresses import normalize
from riverbed_email.domain.content import Content

#: RFC 5322 folds headers at 78 characters; a URL cannot be folded, and Python would
#: otherwise encode a long List-Unsubscribe as an RFC 2047 word that clients do not read
POLICY = policy.SMTP.clone(max_line_length=998)

# an event id usable as it is on the left of a Message-ID (dot-atom-text, no dots at the
# ends); anything else is hashed, so that any id gives a valid, stable Message-ID
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


def message_id_for(event_id: str, domain: str) -> str:
    """``<event-id@domain>``: the same request always gets the same Message-ID."""
    local = event_id
    if len(event_id) > 128 or not _PLAIN_ID.fullmatch(event_id):
        local = hashlib.sha256(event_id.encode()).hexdigest()[:40]
    return f"<{local}@{domain}>"


@dataclass(frozen=True)
class Unsubscribe:
    """List-Unsubscribe of bulk mail (RFC 2369, one-click per RFC 8058)."""

    url_template: str  # https URL; {address} and {token} are filled in per recipient
    secret: bytes | None = None

    def url_for(self, address: str) -> str:
        address = normalize(address)
        token = ""
        if self.secret is not None:
            token = hmac.new(self.secret, address.encode(), hashlib.sha256).hexdigest()
        return self.url_template.format(address=quote(address, safe=""), token=token)


@dataclass(frozen=True)
class OutgoingEmail:
    """What an :class:`~riverbed_email.service_layer.ports.EmailSender` is asked to send."""

    sender: str  # envelope MAIL FROM
    recipient: str  # the one envelope RCPT TO
    message: EmailMessage

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    def as_bytes(self) -> bytes:
        return self.message.as_bytes(policy=POLICY)


def compose(
    content: Content,
    *,
    to: str,
    from_address: str,
    envelope_sender: str,
    message_id: str,
    date: datetime,
    category: str,
    unsubscribe: Unsubscribe | None = None,
) -> OutgoingEmail:
    """One recipient, text (and HTML as multipart/alternative when given)."""
    message = EmailMessage(policy=POLICY)
    message["From"] = from_address
    message["To"] = to
    message["Subject"] = content.subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    if category == "bulk":
        # RFC 3834 and the big receivers' bulk-sender rules: mark it, offer one-click opt-out
        message["Precedence"] = "bulk"
        if unsubscribe is not None:
            message["List-Unsubscribe"] = f"<{unsubscribe.url_for(to)}>"
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # quoted-printable keeps every line 7-bit and short, whatever the relay supports
    message.set_content(content.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if content.html is not None:
        message.add_alternative(
            content.html, subtype="html", charset="utf-8", cte="quoted-printable"
        )
        # derived, not random: a retry sends the same bytes. "=_" never occurs in
        # quoted-printable text ("=" is always followed by hex or a line break)
        message.set_boundary(f"=_rb_{hashlib.sha256(message_id.encode()).hexdigest()[:32]}")
    return OutgoingEmail(sender=envelope_sender, recipient=to, message=message)
