"""Schemathesis against the payments API's own OpenAPI document, over real HTTP, every check.

Requests are generated from the document the app serves, valid and invalid ones, with the
admin key, with the gateway's ingestion key and with none; every answer is judged by every
check Schemathesis has (``--checks all``): no 5xx, a status, content type, headers and body
the document declares for that operation, invalid data refused and valid data accepted,
405 with ``Allow`` for a method the path does not have, authentication not ignored.

The service runs started (SQLite in a temporary directory, the test Redis) behind uvicorn
on a free loopback port, in a thread with its own event loop. The streams it reads and
writes carry this run's token, and every key with the token is removed at the end (the
reports' leases in Redis expire by themselves, PAYMENTS_RECONCILIATION_LEASE_S).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance
from schemathesis.specs.openapi.schemas import OpenApiSchema
from schemathesis.transport import SerializationContext

from riverbed.settings import RedisSettings
from riverbed.testing import fast_settings, free_port, sync_redis_client
from riverbed_payments.adapters.database import sqlite_url
from riverbed_payments.bootstrap import PaymentsService, create_service
from riverbed_payments.settings import INBOUND_STREAMS, PaymentsSettings

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 30  # per operation and phase: bounded, the module runs in about a minute
START_TIMEOUT_S = 15.0
load_all_checks()
ALL_CHECKS = CHECKS.get_all()  # what `schemathesis run --checks all` runs
ADMIN_KEY = "pay_" + secrets.token_urlsafe(24)
INGESTION_KEY = "rbk_" + secrets.token_urlsafe(24)  # what anyone who may post events holds
OWN_STREAMS = (
    *INBOUND_STREAMS,
    "payment.recorded",
    "payment.refund.recorded",
    "payment.reconciliation.completed",
    "payment.reconciliation.mismatch",
    "email.requested",
)


class Served:
    """The started service behind a real uvicorn, in a thread."""

    def __init__(self, redis_url: str, database: Path) -> None:
        self.token = secrets.token_hex(5)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service: PaymentsService = create_service(
            PaymentsSettings(
                api_key=ADMIN_KEY,
                database_url=sqlite_url(database),
                stream_routes={s: f"{s}.fuzz{self.token}" for s in OWN_STREAMS},
                log_level="WARNING",
                log_format="json",
            ),
            redis_settings=RedisSettings(url=redis_url),
            consumer_settings=fast_settings(),
        )
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.service.app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                access_log=False,
                lifespan="off",
            )
        )
        self.thread = threading.Thread(target=self._run, name="payments", daemon=True)
        self.failure: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # surfaced by start()
            self.failure = error

    async def _serve(self) -> None:
        await self.service.start()
        try:
            await self.server.serve()
        finally:
            await self.service.stop()

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the service did not start: {self.failure!r}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start within {START_TIMEOUT_S:g} s")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=START_TIMEOUT_S + 30)


@pytest.fixture(scope="module")
def served(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    found = Served(redis_url, tmp_path_factory.mktemp("payments-fuzz") / "payments.db")
    found.start()
    try:
        yield found
    finally:
        found.stop()
        client = sync_redis_client(redis_url)
        try:
            own = list(client.scan_iter(match=f"*{found.token}*"))
            if own:
                client.unlink(*own)
        finally:
            client.close()


@schemathesis.serializer("text/csv", "application/csv")
def _csv(_ctx: SerializationContext, value: Any) -> bytes | None:
    """A report as sent: text as UTF-8 (Schemathesis knows text/plain, not CSV)."""
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()


def _openapi_document() -> dict[str, Any]:
    """The document as the app builds it (routes do not depend on settings); nothing connects.

    (A schema from a fixture, ``schemathesis.pytest.from_fixture``, fails on pytest 9.)
    """
    document: dict[str, Any] = create_service(PaymentsSettings(api_key="x")).app.openapi()
    return document


def _schema(bearer: str | None) -> OpenApiSchema:
    """The document with the bearer token Schemathesis presents (its ``ignored_auth`` check
    also sends each request without it and expects a refusal)."""
    auth = {"auth": {"openapi": {"HTTPBearer": {"bearer": bearer}}}} if bearer else {}
    return schemathesis.openapi.from_dict(
        _openapi_document(), config=SchemathesisConfig.from_dict(auth)
    )


with_admin_key = _schema(ADMIN_KEY)
with_ingestion_key = _schema(INGESTION_KEY)
without_a_key = _schema(None)
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@with_admin_key.parametrize()
@FUZZ_SETTINGS
def test_with_the_admin_key_every_answer_is_documented_and_passes_every_check(
    case: schemathesis.Case, served: Served
) -> None:
    call_and_check(case, served)


@with_ingestion_key.parametrize()
@settings(FUZZ_SETTINGS, max_examples=MAX_EXAMPLES // 3)  # the same 401 every time
def test_with_the_ingestion_key_every_answer_is_documented(
    case: schemathesis.Case, served: Served
) -> None:
    call_and_check(case, served)


@without_a_key.parametrize()
@settings(FUZZ_SETTINGS, max_examples=MAX_EXAMPLES // 3)  # the same 401 every time
def test_without_a_key_every_answer_is_documented(case: schemathesis.Case, served: Served) -> None:
    call_and_check(case, served)


def refused_report_only(response: Any) -> bool:
    """A 422 about the settlement report's content: whether a CSV has the documented columns
    and readable lines is beyond what a schema can say (the body is a string), so
    schema-valid bodies can be refused. Nothing else is excused."""
    if response.status_code != 422:
        return False
    return str(response.json().get("type", "")).endswith("/invalid-report")


def call_and_check(case: schemathesis.Case, served: Served) -> None:
    response = case.call(base_url=served.url, timeout=10)
    checks = ALL_CHECKS
    if refused_report_only(response):
        checks = [check for check in ALL_CHECKS if check is not positive_data_acceptance]
    case.validate_response(response, checks=checks)
