"""Settings of the email service, from `EMAIL_*` variables (and the shared `REDIS_URL`)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from riverbed.settings import ServiceSettings


class EmailSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EMAIL_", extra="ignore")

    service_name: str = "email"
    port: int = 8001
