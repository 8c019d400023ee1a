"""A large settlement report is stored in bounded memory: it is never held whole."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import func, select

from riverbed_payments.adapters import migrate
from riverbed_payments.adapters.database import create_engine
from riverbed_payments.adapters.reports import SqlReports
from riverbed_payments.adapters.tables import report_lines
from riverbed_payments.service_layer.reconciliation import Reconciler
from riverbed_payments.testing import T0, report_csv, report_line

LINES = 12_000  # ~0.85 MB of CSV


async def _body() -> AsyncIterator[bytes]:
    """The report as an upload arrives: 64 KiB chunks, produced as they are read."""
    yield report_csv([])  # the header
    batch: list[tuple[str, ...]] = []
    pending = b""
    for n in range(LINES):
        batch.append(report_line(f"txn_{n:07d}", "charge", f"pi_{n:07d}", 1000 + n, 30))
        if len(batch) == 500:
            pending += report_csv(batch).split(b"\n", 1)[1]
            batch.clear()
            while len(pending) >= 65536:
                yield pending[:65536]
                pending = pending[65536:]
    yield pending


async def test_a_report_streams_into_storage_without_being_held_whole(
    sqlite_database: Any,
) -> None:
    engine = create_engine(sqlite_database.url)
    await migrate.MIGRATIONS.upgrade(engine)
    reconciler = Reconciler(SqlReports(engine), stream_for=str, clock=lambda: T0, chunk_lines=500)
    tracemalloc.start()
    try:
        report_id = await reconciler.receive("stripe", _body())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    async with engine.connect() as conn:
        query = select(func.count()).where(report_lines.c.report_id == report_id)
        stored = (await conn.execute(query)).scalar()
    await engine.dispose()
    assert stored == LINES
    # held whole, the parsed lines alone would take several MB (each a dataclass of 11
    # fields, strings and a datetime); what is held at once is one 64 KiB chunk of text
    # and one chunk of 500 parsed lines (the text alone, held whole, would break the bound too)
    print(f"peak traced memory while storing {LINES} lines: {peak} bytes")
    assert peak < 1_800_000, f"peak {peak} bytes while storing {LINES} lines"
