"""Settings of the webhooks service, from `WEBHOOKS_*` variables (and the shared `REDIS_URL`)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from riverbed.settings import ServiceSettings


class WebhooksSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEBHOOKS_", extra="ignore")

    service_name: str = "webhooks"
    port: int = 8002
