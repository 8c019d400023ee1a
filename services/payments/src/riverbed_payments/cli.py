"""The ``riverbed-payments`` command line.

``riverbed-payments`` (or ``serve``)      ledger consumers, outbox relay, API, /metrics
``riverbed-payments migrate``             bring the database to the latest schema, then exit
``riverbed-payments reconcile FILE``      submit a settlement report to the running service

``reconcile`` talks to a running service's API. The file is streamed (64 KiB at a time),
so its size does not matter to the CLI; the service stores and matches it in bounded
memory too. Unless ``--no-wait``, the CLI follows the report until it is matched and
prints its counts and discrepancies.

Exit codes: 0 accepted (unless ``--no-wait``: and completed, balanced); 3 completed with
discrepancies; 1 refused or failed (the problem document is printed); 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx

from riverbed import sql
from riverbed.entrypoint import Command, service_main
from riverbed_payments.adapters.database import create_engine
from riverbed_payments.adapters.migrate import MIGRATIONS
from riverbed_payments.bootstrap import create_service
from riverbed_payments.settings import PaymentsSettings

CHUNK_BYTES = 64 * 1024  # bytes read from the report file at a time
DISCREPANCIES = 3  # exit status: completed, with discrepancies
USAGE = 2  # exit status: the command was given wrong arguments


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` names (default: serve); returns the exit status."""
    return service_main(
        argv,
        prog="riverbed-payments",
        description="Riverbed payments: a double-entry ledger of payment events, and "
        "settlement reconciliation.",
        serve=lambda: create_service(PaymentsSettings()),
        commands=[
            Command(
                "migrate",
                "apply pending database migrations and exit",
                lambda _args: sql.migrate(PaymentsSettings(), MIGRATIONS, create_engine),
            ),
            Command(
                "reconcile",
                "submit a settlement report (CSV) to the service's API",
                _reconcile_command,
                _reconcile_arguments,
            ),
        ],
    )


def _reconcile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="the report, in the layout of README.md")
    parser.add_argument("--provider", default="stripe", help="whose report it is (stripe)")
    parser.add_argument(
        "--url", default=None, help="the service's base URL (default http://127.0.0.1:PORT)"
    )
    parser.add_argument("--no-wait", action="store_true", help="return once it is accepted")


def _reconcile_command(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        print(f"riverbed-payments reconcile: {args.file} is not a file", file=sys.stderr)
        return USAGE
    settings = PaymentsSettings()
    key = settings.api_key.get_secret_value() if settings.api_key else None
    url = args.url or f"http://{settings.host}:{settings.port}"
    return asyncio.run(
        reconcile(args.file, provider=args.provider, base_url=url, api_key=key,
                  wait=not args.no_wait)
    )  # fmt: skip


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as file:
        while chunk := await asyncio.to_thread(file.read, CHUNK_BYTES):
            yield chunk


async def reconcile(
    path: Path,
    *,
    provider: str,
    base_url: str,
    api_key: str | None,
    wait: bool = True,
    timeout_s: float = 600.0,
    out: TextIO = sys.stdout,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    headers = {"Content-Type": "text/csv"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, transport=transport, timeout=60.0
    ) as client:
        answer = await client.post(
            "/v1/reconciliations",
            params={"provider": provider, "filename": path.name},
            content=_chunks(path),
        )
        if answer.status_code != 202:
            print(f"refused ({answer.status_code}): {answer.text}", file=out)
            return 1
        report: dict[str, Any] = answer.json()
        print(f"report {report['id']}: {report['lines']} lines received", file=out)
        if not wait:
            return 0
        report = await _matched(client, report, timeout_s)
        if report["status"] == "processing":
            print(f"report {report['id']} still processing after {timeout_s:g} s", file=out)
            return 1
        summary = {k: report[k] for k in (
            "status", "lines", "matched", "missing_in_ledger", "missing_at_provider",
            "amount_mismatch", "payouts", "payouts_unbalanced",
        )}  # fmt: skip
        print(json.dumps(summary), file=out)
        if report["status"] != "completed":
            print(f"failed: {report.get('error')}", file=out)
            return 1
        discrepancies = await _discrepancies(client, report)
        for line in discrepancies:
            where = f"line {line['line']}" if line["line"] else "ledger"
            print(f"  {line['class']:<20} {where:<10} {line['source']}: {line['detail']}", file=out)
        return DISCREPANCIES if discrepancies or report["payouts_unbalanced"] else 0


async def _matched(
    client: httpx.AsyncClient, report: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    """``report`` once it is no longer processing, or as it is after ``timeout_s`` s."""
    deadline = time.monotonic() + timeout_s
    while report["status"] == "processing" and time.monotonic() <= deadline:
        await asyncio.sleep(0.2)  # s between polls of a background job
        report = (await client.get(f"/v1/reconciliations/{report['id']}")).json()
    return report


async def _discrepancies(client: httpx.AsyncClient, report: dict[str, Any]) -> list[Any]:
    """The first 20 lines of each discrepancy class the report has."""
    return [
        line
        for cls in ("missing_in_ledger", "missing_at_provider", "amount_mismatch")
        if report[cls]
        for line in (
            await client.get(
                f"/v1/reconciliations/{report['id']}/lines",
                params={"class": cls, "limit": 20},
            )
        ).json()["data"]
    ]
