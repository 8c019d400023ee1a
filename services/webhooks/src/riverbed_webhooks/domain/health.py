"""Endpoint health: an endpoint failing without a single success for too long is disabled.

The clock starts at the first failure after the last success (``failing_since``)
and any success stops it. Svix and Stripe do the same, so that an abandoned
receiver stops costing retries without a single slow day disabling a good one.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def should_disable(failing_since: datetime | None, now: datetime, period: timedelta) -> bool:
    """True when the endpoint has failed, without any success, for at least ``period``."""
    return failing_since is not None and now - failing_since >= period


def describe_failing(failing_since: datetime, now: datetime) -> str:
    """Human-readable reason for a health-based disable."""
    days = (now - failing_since) / timedelta(days=1)
    if days >= 1:
        return f"no successful delivery for {days:.1f} days"
    return f"no successful delivery for {(now - failing_since).total_seconds():.0f} s"
