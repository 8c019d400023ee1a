"""What delivering a request raises for the runtime: retry on schedule, or give up for good.

A request given up raises the same error the first time and on every redelivery that
finds its failure record: :func:`error_of` decides which.
"""

from __future__ import annotations

from riverbed.errors import PermanentError, RiverbedError
from riverbed_email.domain.records import FailedRecord


class SmtpDeferred(RiverbedError):
    """The relay did not take the message this time; the runtime retries on schedule."""


class AttemptsExhausted(PermanentError):
    """Every attempt was deferred, or the last one never completed: given up.

    Permanent for the runtime (dead-lettered at once, reason ``permanent``, error type
    ``AttemptsExhausted``): the email service counts its attempts itself.
    """


def error_of(record: FailedRecord) -> PermanentError:
    """What the handler raises for a request given up, the first time and on redelivery."""
    if record.kind == "exhausted":
        return AttemptsExhausted(f"gave up after {record.attempts} attempts: {record.reason}")
    return PermanentError(record.reason)
