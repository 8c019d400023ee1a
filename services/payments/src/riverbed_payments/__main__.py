"""Entry point: ``riverbed-payments`` (or ``python -m riverbed_payments``).

``riverbed-payments``                     serve: ledger consumers, outbox relay, API, /metrics
``riverbed-payments migrate``             bring the database to the latest schema, then exit
``riverbed-payments reconcile FILE``      submit a settlement report to the running service
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from riverbed import sql
from riverbed_payments.adapters.migrate import MIGRATIONS
from riverbed_payments.adapters.sql import create_engine
from riverbed_payments.bootstrap import PaymentsService, create_service
from riverbed_payments.entrypoints.cli import reconcile
from riverbed_payments.settings import PaymentsSettings

__all__ = ["create_service", "main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="riverbed-payments", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the service (the default)")
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    submit = commands.add_parser(
        "reconcile", help="submit a settlement report (CSV) to the service's API"
    )
    submit.add_argument("file", type=Path, help="the report, in the layout of README.md")
    submit.add_argument("--provider", default="stripe", help="whose report it is (stripe)")
    submit.add_argument(
        "--url", default=None, help="the service's base URL (default http://127.0.0.1:PORT)"
    )
    submit.add_argument("--no-wait", action="store_true", help="return once it is accepted")
    args = parser.parse_args(argv)
    settings = PaymentsSettings()
    if args.command == "migrate":
        sys.exit(sql.migrate(settings, MIGRATIONS, create_engine))
    if args.command == "reconcile":
        if not args.file.is_file():
            parser.error(f"{args.file} is not a file")
        key = settings.api_key.get_secret_value() if settings.api_key else None
        url = args.url or f"http://{settings.host}:{settings.port}"
        code = asyncio.run(
            reconcile(args.file, provider=args.provider, base_url=url, api_key=key,
                      wait=not args.no_wait)
        )  # fmt: skip
        sys.exit(code)
    service: PaymentsService = create_service(settings)
    service.run()


if __name__ == "__main__":
    main()
