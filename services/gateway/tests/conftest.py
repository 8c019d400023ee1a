"""Fixtures of the gateway tests: a started gateway on the test Redis, an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from riverbed.service import Service
from riverbed.settings import RedisSettings
from riverbed_gateway.bootstrap import create_service
from riverbed_gateway.settings import GatewaySettings

GatewayFactory = Callable[..., Any]


@pytest.fixture
async def start_gateway(redis_url: str) -> AsyncIterator[GatewayFactory]:
    """Start gateways (settings overridable); each yields (service, client)."""
    started: list[tuple[Service, httpx.AsyncClient]] = []

    async def factory(**overrides: Any) -> tuple[Service, httpx.AsyncClient]:
        values: dict[str, Any] = {"local_api_key": "test-key", "log_format": "json"}
        values.update(overrides)
        service = create_service(
            GatewaySettings(**values), redis_settings=RedisSettings(url=redis_url)
        )
        await service.start()
        transport = httpx.ASGITransport(app=service.app)
        client = httpx.AsyncClient(
            transport=transport,
            base_url="http://gateway",
            headers={"Authorization": "Bearer test-key"},
        )
        started.append((service, client))
        return service, client

    yield factory
    for service, client in started:
        await client.aclose()
        await service.stop()


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> tuple[Service, httpx.AsyncClient]:
    result: tuple[Service, httpx.AsyncClient] = await start_gateway()
    return result
