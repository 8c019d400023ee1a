"""Settings of the gateway service, from `GATEWAY_*` variables (and the shared `REDIS_URL`)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from riverbed.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    service_name: str = "gateway"
    port: int = 8000
