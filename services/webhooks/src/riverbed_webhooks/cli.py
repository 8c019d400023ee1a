"""The command line: ``riverbed-webhooks`` (or ``python -m riverbed_webhooks``).

``riverbed-webhooks [serve]``   the fan-out and delivery consumers, the API, /metrics
``riverbed-webhooks migrate``   bring the database to the latest schema, then exit
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from riverbed import sql
from riverbed.entrypoint import Command, service_main
from riverbed_webhooks.adapters.migrate import MIGRATIONS
from riverbed_webhooks.adapters.sql import create_engine
from riverbed_webhooks.bootstrap import create_service
from riverbed_webhooks.settings import WebhooksSettings


def migrate(_args: argparse.Namespace) -> int:
    """Apply the pending migrations (the deployment's init step); the exit status."""
    return sql.migrate(WebhooksSettings(), MIGRATIONS, create_engine)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` names (default: serve); returns the exit status."""
    return service_main(
        argv,
        prog="riverbed-webhooks",
        description="Riverbed webhooks: signed, retried delivery of events to endpoints.",
        serve=lambda: create_service(WebhooksSettings()),
        commands=[
            Command("migrate", "apply pending database migrations and exit", migrate),
        ],
    )
