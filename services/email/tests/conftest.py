"""Fixtures of the email tests: a scripted SMTP server, TLS material, a started service."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from riverbed.service import Service
from riverbed.settings import RedisSettings
from riverbed.testing import fast_settings
from riverbed_email.bootstrap import create_service
from riverbed_email.settings import EmailSettings
from riverbed_email.testing import ScriptedSmtpServer

TEMPLATES = Path(__file__).parents[1] / "templates"


SmtpFactory = Callable[..., Awaitable[ScriptedSmtpServer]]


@pytest.fixture
async def start_smtp() -> AsyncIterator[SmtpFactory]:
    """Start SMTP servers (``ScriptedSmtpServer`` options); all are stopped at teardown."""
    started: list[ScriptedSmtpServer] = []

    async def factory(**options: Any) -> ScriptedSmtpServer:
        server = await ScriptedSmtpServer(**options).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        await server.stop()


@pytest.fixture
async def smtp_server(start_smtp: SmtpFactory) -> ScriptedSmtpServer:
    """A plain-text SMTP server on loopback; script it with ``smtp_server.on(address, …)``."""
    return await start_smtp()


@dataclass(frozen=True)
class Tls:
    server_context: ssl.SSLContext
    ca_file: Path


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    """A throwaway CA and a server certificate for 127.0.0.1."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Tls(context, ca_file)


def settings_for(server: ScriptedSmtpServer, **overrides: Any) -> EmailSettings:
    """Email settings pointing at ``server``, plain text unless overridden, short timeouts."""
    values: dict[str, Any] = {
        "smtp_host": server.host,
        "smtp_port": server.port,
        "smtp_security": "none",
        "smtp_timeout_s": 5.0,
        "smtp_local_hostname": "client.test",
        "from_address": "Riverbed <no-reply@riverbed.test>",
        "templates_dir": TEMPLATES,
        "log_format": "json",
    }
    values.update(overrides)
    return EmailSettings(**values)


ServiceFactory = Callable[..., Any]


@pytest.fixture
async def start_email(redis_url: str) -> AsyncIterator[ServiceFactory]:
    """Start email services on the test Redis (fast consumer timers); stopped at teardown."""
    started: list[Service] = []

    async def factory(settings: EmailSettings, **consumer: Any) -> Service:
        service = create_service(
            settings,
            redis_settings=RedisSettings(url=redis_url),
            consumer_settings=fast_settings(**consumer),
        )
        await service.start()
        started.append(service)
        return service

    yield factory
    for service in started:
        await service.stop()
