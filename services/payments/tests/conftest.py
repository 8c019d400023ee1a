"""Fixtures of the payments tests: SQLite and PostgreSQL ledgers, events, a started service.

Every test writes only tables and keys unique to it: an SQLite file in its tmp dir or a
PostgreSQL schema of its own, and its streams routed to names with the test's token
(``PAYMENTS_STREAM_ROUTES``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from riverbed.settings import ConsumerSettings, RedisSettings
from riverbed.testing import ScratchDatabase, fast_settings, scratch_database
from riverbed_contracts import CloudEvent, Payload
from riverbed_contracts.registry import new_event
from riverbed_payments.adapters import migrate
from riverbed_payments.adapters.database import create_engine, sqlite_url
from riverbed_payments.bootstrap import PaymentsService, create_service
from riverbed_payments.settings import INBOUND_STREAMS, PaymentsSettings

API_KEY = "test-payments-key"
POSTGRES_URL = os.environ.get(
    "PAYMENTS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

#: every stream the service reads or writes
OWN_STREAMS = (
    *INBOUND_STREAMS,
    "payment.recorded",
    "payment.refund.recorded",
    "payment.reconciliation.completed",
    "payment.reconciliation.mismatch",
    "email.requested",
)


Database = ScratchDatabase


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> AsyncIterator[Database]:
    """An empty database: an SQLite file, or a PostgreSQL schema of this test's own."""
    async with scratch_database(
        request.param,
        sqlite_file=tmp_path / "payments.db",
        postgres_url=POSTGRES_URL,
        schema=f"pay_test_{unique}",
        url_setting="PAYMENTS_TEST_POSTGRES_URL",
    ) as scratch:
        yield scratch


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Database:
    return Database(sqlite_url(tmp_path / "payments.db"))


@pytest.fixture
async def engine(database: Database) -> AsyncIterator[AsyncEngine]:
    """A migrated database (SQLite file or PostgreSQL schema of this test)."""
    found = create_engine(database.url, schema=database.schema)
    assert await migrate.MIGRATIONS.upgrade(found) == migrate.MIGRATIONS.head_revision()
    try:
        yield found
    finally:
        await found.dispose()


# -- events -------------------------------------------------------------------------------


def event_of(payload: Payload, **attributes: Any) -> CloudEvent:
    attributes.setdefault("source", "urn:riverbed:test")
    return new_event(payload, **attributes)


# -- the service ------------------------------------------------------------------------------


@dataclass
class Running:
    service: PaymentsService
    client: httpx.AsyncClient
    settings: PaymentsSettings

    def stream(self, logical: str) -> str:
        return self.settings.stream(logical)


StartService = Callable[..., Awaitable[Running]]


def settings_for(
    unique: str, database: Database | None = None, **overrides: Any
) -> PaymentsSettings:
    values: dict[str, Any] = {
        "api_key": API_KEY,
        "log_format": "json",
        "stream_routes": {s: f"{s}.t{unique}" for s in OWN_STREAMS},
        "outbox_poll_interval_s": 0.05,
        "out_of_order_retry_ms": 50,
        "report_chunk_lines": 7,  # small: reports of a few lines cross chunk boundaries
    }
    if database is not None:
        values["database_url"] = database.url
        values["database_schema"] = database.schema
    values.update(overrides)
    return PaymentsSettings(**values)


@pytest.fixture
async def start_service(
    redis_url: str, unique: str, sqlite_database: Database
) -> AsyncIterator[StartService]:
    """Start payments services on the test Redis (settings and consumer settings
    overridable); stopped at teardown."""
    started: list[Running] = []

    async def factory(
        database: Database | None = None,
        *,
        consumer_settings: ConsumerSettings | None = None,
        **overrides: Any,
    ) -> Running:
        settings = settings_for(unique, database or sqlite_database, **overrides)
        service = create_service(
            settings,
            redis_settings=RedisSettings(url=redis_url),
            consumer_settings=consumer_settings or fast_settings(),
        )
        await service.start()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.app),
            base_url="http://payments",
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        running = Running(service, client, settings)
        started.append(running)
        return running

    yield factory
    for running in started:
        await running.client.aclose()
        await running.service.stop()
