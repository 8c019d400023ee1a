"""The email service's Prometheus metrics, next to the runtime's (``riverbed_*``).

``domain`` is the recipient domain when it is one of ``EMAIL_METRICS_DOMAINS``, else
``other``: callers choose addresses, and a label must stay bounded.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
# reason: smtp_4xx | no_reply | session_5xx | rate_limited | held_elsewhere (another
# replica holds the request's sending lease)
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
    "Accepted sends whose marker was still not written when the service stopped "
    "(a redelivery sends them again)",
)
UNRECORDED_NOW = Gauge(
    "riverbed_email_outcomes_unrecorded",
    "Outcomes decided in this process (accepted sends, give-ups) that Redis has not "
    "recorded yet; their handlers wait, their requests stay pending with this consumer",
)
# outcome: sent | failed. For sent, this is the window in which a kill -9 sends twice.
RECORD_SECONDS = Histogram(
    "riverbed_email_record_seconds",
    "From the relay's answer (or the decision to give up) to its record in Redis, s",
    ["outcome"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1, 1, 10, 60, 600),
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
