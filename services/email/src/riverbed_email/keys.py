"""The email service's Redis keys, all under ``rb:email:``.

They are per address, per event or per recipient domain. A domain's rate and slow-down
keys share the domain as hash tag, so one script may use both.
"""

from __future__ import annotations

from riverbed.keys import hash_tag, owned_key, owner_prefix

#: where every key of the email service starts
KEY_PREFIX = owner_prefix("email")


def email_suppression_key() -> str:
    """Hash: lowercased address -> JSON {reason, smtp_code, event_id, at_ms}. No TTL.

    Shared by every email replica; checked before each send, listed and edited by
    ``riverbed-email suppressions``. Entries stay until an operator removes them.
    """
    return owned_key(KEY_PREFIX, "suppressed")


def email_sent_key(event_id: str) -> str:
    """Marker of an email the SMTP server accepted, by request event id (TTL: 7 d default).

    JSON {message_id, attempts, at_ms}, written with SET NX as the send completes, so
    that a redelivered request is not sent twice.
    """
    return owned_key(KEY_PREFIX, "sent", event_id)


def email_failed_key(event_id: str) -> str:
    """Record of a request the email service gave up, by request event id (TTL: as the sent
    marker's). JSON {kind, reason, permanent, smtp_code, attempts, at_ms}, written with SET NX
    before ``email.failed`` is published, so a redelivery publishes that same event again
    instead of trying the relay again."""
    return owned_key(KEY_PREFIX, "failed", event_id)


def email_sending_key(event_id: str) -> str:
    """Lease of the email replica sending a request, by request event id (PX: the lease,
    ``EMAIL_SEND_LEASE_S``). Its holder's token, taken before the relay is contacted and
    released once the outcome is recorded, so another replica handed the same request
    meanwhile waits instead of sending it too."""
    return owned_key(KEY_PREFIX, "sending", event_id)


def email_domain_rate_key(domain: str) -> str:
    """GCRA state of one recipient domain: its theoretical arrival time, µs (TTL: one burst)."""
    return owned_key(KEY_PREFIX, "rate", hash_tag(domain))


def email_domain_slowdown_key(domain: str) -> str:
    """Slow-down level of a domain that answered 421/450/451/452 (integer; TTL: the window)."""
    return owned_key(KEY_PREFIX, "slow", hash_tag(domain))
