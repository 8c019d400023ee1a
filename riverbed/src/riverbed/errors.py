"""How a handler tells the runtime what a failure means.

Any exception a handler raises is *transient* by default: the entry is retried
with backoff until its delivery count reaches the limit. Raise
:class:`PermanentError` (or let a payload fail validation) when retrying cannot
help: the entry goes to the dead-letter stream at once.

Every exception class the runtime defines derives from :class:`RiverbedError`, so a caller
can tell the runtime's refusals from anything else with one ``except``; a class that is
also a built-in kind (``ScheduleError`` is a ``ValueError``) keeps that base as well, so
existing ``except ValueError`` clauses still catch it.
"""

from __future__ import annotations


class RiverbedError(Exception):
    """The root of every exception class the runtime (and, in time, each service) defines."""


class PermanentError(RiverbedError):
    """Retrying cannot succeed: dead-letter the entry now."""


class RetryLater(RiverbedError):
    """Transient failure with a known wait, e.g. a ``Retry-After`` from a peer.

    ``delay_ms`` overrides the backoff schedule for this attempt.

    ``counts_as_delivery=False`` is for "not now" rather than "failed": the handler did
    not try (a rate limit or a concurrency cap of its own said wait), so this delivery
    does not count towards the dead-letter limit and the next one carries the same
    ``attempt``. Such an entry is never dead-lettered for waiting, however long it waits.
    """

    def __init__(self, message: str, *, delay_ms: int, counts_as_delivery: bool = True) -> None:
        super().__init__(message)
        self.delay_ms = delay_ms
        self.counts_as_delivery = counts_as_delivery
