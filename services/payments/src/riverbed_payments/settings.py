"""Settings of the payments service, from `PAYMENTS_*` variables (and the shared `REDIS_URL`)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from riverbed.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore")

    service_name: str = "payments"
    port: int = 8003
