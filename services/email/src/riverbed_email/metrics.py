"""The email service's Prometheus metrics, next to the runtime's (``riverbed_*``).

``domain`` is the recipient domain when it is one of ``EMAIL_METRICS_DOMAINS``, else
``other``: callers choose addresses, and a label must stay bounded.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SENT = Counter("riverbed_email_sent_total", "Emails the SMTP relay accepted", ["domain"])
# reason: rejected (5xx) | exhausted (retries ran out) | invalid (template or address)
FAILED = Counter(
    "riverbed_email_failed_total", "Emails given up (email.failed published)", ["domain", "reason"]
)
SUPPRESSED = Counter(
    "riverbed_email_suppressed_total",
    "Sends skipped because the address is on the suppression list",
    ["domain"],
)
# reason: smtp_4xx | no_reply | session_5xx | rate_limited
RETRIED = Counter(
    "riverbed_email_retried_total", "Sends deferred to a later attempt", ["domain", "reason"]
)
SMTP_SECONDS = Histogram(
    "riverbed_email_smtp_seconds",
    "Time of one SMTP send, connect to last reply, by verdict (sent | retry | reject)",
    ["verdict"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
SUPPRESSIONS_ADDED = Counter(
    "riverbed_email_suppressions_added_total", "Addresses put on the suppression list", ["domain"]
)
ALREADY_SENT = Counter(
    "riverbed_email_already_sent_total",
    "Redelivered requests the relay had accepted before: not sent again",
)
UNRECORDED = Counter(
    "riverbed_email_sent_unrecorded_total",
    "Accepted sends whose marker could not be written (a redelivery would send again)",
)
RATE_LIMITED = Counter(
    "riverbed_email_rate_limited_total",
    "Sends held back by a domain's rate (action: waited in-process | rescheduled)",
    ["domain", "action"],
)
SLOWDOWNS = Counter(
    "riverbed_email_domain_slowdowns_total",
    "Throttling replies (421/450/451/452) that slowed a domain down",
    ["domain"],
)
