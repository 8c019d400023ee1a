"""Fixtures of the webhooks tests: loopback receivers, SQLite and PostgreSQL, a started service.

Every test writes only keys and tables unique to it: the service's own streams are
routed to names with the test's token (``WEBHOOKS_STREAM_ROUTES``), its cache
namespaces carry the token, and PostgreSQL tests get a schema of their own.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from riverbed.service import Service
from riverbed.settings import RedisSettings
from riverbed.testing import ScratchDatabase, fast_settings, scratch_database
from riverbed_webhooks.adapters.sql import sqlite_url
from riverbed_webhooks.bootstrap import Container, create_service
from riverbed_webhooks.settings import WebhooksSettings

API_KEY = "test-api-key"
POSTGRES_URL = os.environ.get(
    "WEBHOOKS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)

# -- receivers --------------------------------------------------------------------------

#: a scripted answer: a status, (status, headers), "slow" (never answers), or "redirect"
Answer = int | tuple[int, dict[str, str]] | str


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified_by: list[int]  # indexes of the path's secrets whose signature verified


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that verifies every request with ``standardwebhooks``."""

    base_url: str = ""
    requests: list[Received] = field(default_factory=list)
    scripts: dict[str, list[Answer]] = field(default_factory=dict)
    secrets: dict[str, list[str]] = field(default_factory=dict)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    connections: int = 0

    def url(self, path: str) -> str:
        return self.base_url + path

    def script(self, path: str, *answers: Answer) -> str:
        """Answer requests to ``path`` in this order (the last answer repeats); its URL."""
        self.scripts[path] = list(answers)
        return self.url(path)

    def trust(self, path: str, *secrets: str) -> None:
        """Secrets the requests to ``path`` are verified with."""
        self.secrets[path] = list(secrets)

    def to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        verified = []
        for index, secret in enumerate(self.secrets.get(request.path, [])):
            try:
                Webhook(secret).verify(body, headers)
                verified.append(index)
            except WebhookVerificationError:
                pass
        self.requests.append(Received(request.path, headers, body, verified))
        script = self.scripts.get(request.path, [200])
        answer = script.pop(0) if len(script) > 1 else script[0]
        if answer == "slow":
            await self.released.wait()  # beyond any timeout: released at teardown
            return web.Response(status=200)
        if answer == "redirect":
            raise web.HTTPFound(location=self.url("/redirect-target"))
        if isinstance(answer, tuple):
            return web.Response(status=answer[0], headers=answer[1], text="scripted")
        assert isinstance(answer, int)
        return web.Response(status=answer, text=f"answer {answer}")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", found.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    found.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield found
    finally:
        found.released.set()
        await runner.cleanup()
    unverified = [r for r in found.requests if found.secrets.get(r.path) and not r.verified_by]
    assert not unverified, f"requests whose signature did not verify: {unverified}"


# -- databases --------------------------------------------------------------------------


Database = ScratchDatabase


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> AsyncIterator[Database]:
    """An empty database: an SQLite file, or a PostgreSQL schema of this test's own."""
    async with scratch_database(
        request.param,
        sqlite_file=tmp_path / "webhooks.db",
        postgres_url=POSTGRES_URL,
        schema=f"wh_test_{unique}",
        url_setting="WEBHOOKS_TEST_POSTGRES_URL",
    ) as scratch:
        yield scratch


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Database:
    return Database(sqlite_url(tmp_path / "webhooks.db"))


# -- the service ------------------------------------------------------------------------

OWN_STREAMS = (
    "webhook.delivery.requested",
    "webhook.delivery.succeeded",
    "webhook.delivery.exhausted",
    "webhook.endpoint.disabled",
)


@dataclass
class Running:
    service: Service[WebhooksSettings, Container]
    client: httpx.AsyncClient
    settings: WebhooksSettings
    source_stream: str

    def stream(self, logical: str) -> str:
        return self.settings.stream(logical)


StartService = Callable[..., Awaitable[Running]]


def settings_for(
    unique: str, database: Database | None = None, **overrides: Any
) -> WebhooksSettings:
    values: dict[str, Any] = {
        "api_key": API_KEY,
        "log_format": "json",
        "source_streams": [f"payment.succeeded.t{unique}"],
        "stream_routes": {s: f"{s}.t{unique}" for s in OWN_STREAMS},
        "cache_namespace": f"wh-{unique}",
        "allowed_networks": ["127.0.0.1/32"],
        "retry_schedule_ms": [20, 20],
        "retry_jitter": 0.0,
        "request_timeout_s": 2.0,
        "deferral_base_ms": 20,
        "deferral_max_ms": 100,
    }
    if database is not None:
        values["database_url"] = database.url
        values["database_schema"] = database.schema
    values.update(overrides)
    return WebhooksSettings(**values)


async def start(settings: WebhooksSettings, redis_settings: RedisSettings) -> Running:
    """A started service and an API client holding the admin key; the caller stops both."""
    service = create_service(
        settings, redis_settings=redis_settings, consumer_settings=fast_settings()
    )
    await service.start()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app),
        base_url="http://webhooks",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    return Running(service, client, settings, settings.source_streams[0])


@pytest.fixture
async def start_service(
    redis_url: str, unique: str, sqlite_database: Database
) -> AsyncIterator[StartService]:
    """Start webhooks services on the test Redis (settings overridable); stopped at teardown."""
    started: list[Running] = []

    async def factory(
        database: Database | None = None, *, cache_url: str | None = None, **overrides: Any
    ) -> Running:
        settings = settings_for(unique, database or sqlite_database, **overrides)
        running = await start(settings, RedisSettings(url=redis_url, cache_url=cache_url))
        started.append(running)
        return running

    yield factory
    for running in started:
        await running.client.aclose()
        await running.service.stop()
