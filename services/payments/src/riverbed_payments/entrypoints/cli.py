"""``riverbed-payments reconcile``: submit a settlement report to a running service's API.

The file is streamed (64 KiB at a time), so its size does not matter to the CLI; the
service stores and matches it in bounded memory too. With ``--wait`` the CLI follows
the report until it is matched and prints its counts and discrepancies.

Exit codes: 0 accepted (with ``--wait``: completed, balanced); 3 completed with
discrepancies; 1 refused or failed (the problem document is printed); 2 usage.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

import httpx

CHUNK_BYTES = 64 * 1024
DISCREPANCIES = 3


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
        deadline = time.monotonic() + timeout_s
        while report["status"] == "processing":
            if time.monotonic() > deadline:
                print(f"report {report['id']} still processing after {timeout_s:g} s", file=out)
                return 1
            await asyncio.sleep(0.2)  # s between polls of a background job
            report = (await client.get(f"/v1/reconciliations/{report['id']}")).json()
        summary = {k: report[k] for k in (
            "status", "lines", "matched", "missing_in_ledger", "missing_at_provider",
            "amount_mismatch", "payouts", "payouts_unbalanced",
        )}  # fmt: skip
        print(json.dumps(summary), file=out)
        if report["status"] != "completed":
            print(f"failed: {report.get('error')}", file=out)
            return 1
        discrepancies = [
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
        for line in discrepancies:
            where = f"line {line['line']}" if line["line"] else "ledger"
            print(f"  {line['class']:<20} {where:<10} {line['source']}: {line['detail']}", file=out)
        return DISCREPANCIES if discrepancies or report["payouts_unbalanced"] else 0
