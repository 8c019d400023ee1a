"""Entry point: ``riverbed-webhooks`` (or ``python -m riverbed_webhooks``).

``riverbed-webhooks``           serve: fan-out and delivery consumers, the API, /metrics
``riverbed-webhooks migrate``   bring the database to the latest schema, then exit
"""

from __future__ import annotations

import argparse
import sys

from riverbed import sql
from riverbed_webhooks.adapters.migrate import MIGRATIONS
from riverbed_webhooks.adapters.sql import create_engine
from riverbed_webhooks.bootstrap import WebhooksService, create_service
from riverbed_webhooks.settings import WebhooksSettings

__all__ = ["create_service", "main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="riverbed-webhooks", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the service (the default)")
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    args = parser.parse_args(argv)
    settings = WebhooksSettings()
    if args.command == "migrate":
        sys.exit(sql.migrate(settings, MIGRATIONS, create_engine))
    service: WebhooksService = create_service(settings)
    service.run()


if __name__ == "__main__":
    main()
