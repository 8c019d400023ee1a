"""How a handler tells the runtime what a failure means.

Any exception a handler raises is *transient* by default: the entry is retried
with backoff until its delivery count reaches the limit. Raise
:class:`PermanentError` (or let a payload fail validation) when retrying cannot
help: the entry goes to the dead-letter stream at once.
"""

from __future__ import annotations


class PermanentError(Exception):
    """Retrying cannot succeed: dead-letter the entry now."""


class RetryLater(Exception):
    """Transient failure with a known wait, e.g. a ``Retry-After`` from a peer.

    ``delay_ms`` overrides the backoff schedule for this attempt.
    """

    def __init__(self, message: str, *, delay_ms: int) -> None:
        super().__init__(message)
        self.delay_ms = delay_ms
