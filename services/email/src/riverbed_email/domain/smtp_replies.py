"""What an SMTP answer means for a request, by SMTP's own rules (RFC 5321 §4.2.1, RFC 3463).

The sender adapter reports what happened as an :class:`SmtpResult` — the reply code (or
none: timeout, dropped connection, refused connection), its text and the stage of the
conversation — and :func:`classify` decides, without any I/O:

=========================================  =========  ==========================
answer                                     verdict    and
=========================================  =========  ==========================
2xx to the message data                    SENT
4xx anywhere                               RETRY      421/450/451/452 slow the domain down
no answer (timeout, drop, refused)         RETRY
5xx while opening the session              RETRY      greeting, EHLO, STARTTLS, AUTH: about
                                                      our relay account, not this email
5xx to MAIL FROM / RCPT TO / DATA          REJECT     the address is suppressed when the
                                                      refusal is about it (see below)
our side cannot express the address        REJECT
=========================================  =========  ==========================

A 5xx is about the address when its enhanced status code (RFC 3463) has subject 1
(addressing: 5.1.1 no such user) or 2 (mailbox: 5.2.1 disabled), or when it came in
answer to RCPT TO without an enhanced code. Subject 7 (policy: 5.7.1 blocked, relay
denied) is about our reputation or content, so the address is *not* suppressed.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Literal

#: where in the conversation the result came from
Stage = Literal["connect", "mail", "rcpt", "data", "transaction", "address"]

#: replies by which a receiver asks us to slow down (RFC 5321 §4.2.2, common practice)
THROTTLING_CODES = frozenset({421, 450, 451, 452})

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class SmtpResult:
    """One send as the relay answered it; ``code`` None when no reply came."""

    code: int | None
    text: str
    stage: Stage

    def describe(self) -> str:
        """For events and logs: ``550 5.1.1 no such user`` or ``no reply: timed out``."""
        text = " ".join(self.text.split())[:300]
        if self.code is None:
            return f"no reply ({self.stage}): {text}" if text else f"no reply ({self.stage})"
        return f"{self.code} {text}".strip()


class Verdict(enum.Enum):
    SENT = "sent"
    RETRY = "retry"
    REJECT = "reject"


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str  # for humans: the reply, as describe() gives it
    code: int | None = None
    suppress: bool = False  # REJECT only: the address itself was refused
    slow_down: bool = False  # RETRY only: the domain asked us to send slower

    @property
    def retry_reason(self) -> str:
        """Bounded label for the retried metric."""
        if self.code is None:
            return "no_reply"
        if self.code >= 500:
            return "session_5xx"
        return "smtp_4xx"


def enhanced_status(text: str) -> tuple[int, int, int] | None:
    """The RFC 3463 code at the start of a reply's text (``5.1.1 …`` -> (5, 1, 1))."""
    found = _ENHANCED.match(text)
    if found is None:
        return None
    klass, subject, detail = (int(part) for part in found.groups())
    return klass, subject, detail


def _about_the_address(result: SmtpResult) -> bool:
    enhanced = enhanced_status(result.text)
    if enhanced is not None:
        _, subject, _ = enhanced
        if subject in (1, 2):
            return True
        if subject == 7:
            return False
    return result.stage == "rcpt"


def classify(result: SmtpResult) -> Outcome:
    reason = result.describe()
    code = result.code
    if code is None:
        if result.stage == "address":
            return Outcome(Verdict.REJECT, reason)
        return Outcome(Verdict.RETRY, reason)
    if 200 <= code < 300:
        if result.stage in ("data", "transaction"):
            return Outcome(Verdict.SENT, reason, code)
        # a 2xx that did not end a transaction is no acceptance: try again
        return Outcome(Verdict.RETRY, reason, code)
    if 400 <= code < 500:
        return Outcome(Verdict.RETRY, reason, code, slow_down=code in THROTTLING_CODES)
    if 500 <= code < 600:
        if result.stage == "connect":
            return Outcome(Verdict.RETRY, reason, code)
        return Outcome(Verdict.REJECT, reason, code, suppress=_about_the_address(result))
    # 1xx/3xx/6xx: not a final answer a compliant server gives here
    return Outcome(Verdict.RETRY, reason, code)
