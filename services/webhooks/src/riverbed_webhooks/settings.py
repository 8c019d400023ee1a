"""Settings of the webhooks service, from `WEBHOOKS_*` variables (and the shared `REDIS_URL`).

Lists and maps are JSON (``WEBHOOKS_SOURCE_STREAMS='["payment.succeeded"]'``).
Durations carry their unit in the name.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from riverbed.settings import AdminApiSettings, admin_key_field
from riverbed.sql import DatabaseServiceSettings, database_url_field


class WebhooksSettings(DatabaseServiceSettings, AdminApiSettings):
    # the rest of the configuration (errors never show the values) is DatabaseServiceSettings'
    model_config = SettingsConfigDict(env_prefix="WEBHOOKS_")

    service_name: str = "webhooks"
    port: int = 8002

    # -- storage -------------------------------------------------------------------
    database_url: SecretStr = database_url_field("var/webhooks/webhooks.db")

    # -- management API ----------------------------------------------------------
    # an admin key of its own, never the gateway's ingestion key (RIVERBED_API_KEY): the API
    # hands out signing secrets and decides where this service sends requests
    api_key: SecretStr | None = admin_key_field("WEBHOOKS_API_KEY")

    # -- what is delivered ---------------------------------------------------------
    source_streams: list[str] = Field(
        default=[
            "payment.succeeded",
            "payment.failed",
            "payment.refunded",
            # the ledger's confirmations (payments service): what merchants usually want
            "payment.recorded",
            "payment.refund.recorded",
        ],
        min_length=1,
        description="logical streams whose events fan out to endpoints",
    )
    stream_routes: dict[str, str] = Field(
        default_factory=dict,
        description="logical stream -> stream actually used for the streams this service "
        "writes (tests, staging): webhook.delivery.requested and the outcome events",
    )

    # -- delivery --------------------------------------------------------------------
    request_timeout_s: float = Field(default=15.0, gt=0, description="whole request, s")
    retry_schedule_ms: list[int] = Field(
        # the Standard Webhooks schedule (domain.retry.STANDARD_SCHEDULE_MS): 5 s, 5 min,
        # 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h; settings import no layer of the service
        default=[s * 1000 for s in (5, 300, 1_800, 7_200, 18_000, 36_000, 50_400, 72_000, 86_400)],
        description="wait before attempts 2, 3, … (ms); the first attempt goes at once",
    )
    retry_jitter: float = Field(default=0.1, ge=0, le=1, description="± fraction of a delay")
    retry_after_max_ms: int = Field(
        default=86_400_000, ge=0, description="cap on an honoured Retry-After, ms"
    )
    max_response_bytes: int = Field(
        default=2048, ge=0, description="response body kept in the delivery log, bytes"
    )
    endpoint_concurrency: int = Field(
        default=10, ge=1, description="requests in flight per endpoint per replica (default cap)"
    )
    deferral_base_ms: int = Field(
        default=500, ge=1, description="first wait of a task deferred by a limit, ms (doubles)"
    )
    deferral_max_ms: int = Field(default=60_000, ge=1, description="cap on that wait, ms")
    max_deliveries: int = Field(
        default=200,
        ge=2,
        description="runtime backstop on the deliveries of one task (a handler that keeps "
        "crashing); deferrals do not count, real attempts are bounded by the retry schedule",
    )

    # -- endpoint health -----------------------------------------------------------
    disable_after_failing_s: float = Field(
        default=5 * 86_400, gt=0, description="disable an endpoint failing this long, s"
    )
    secret_rotation_grace_s: float = Field(
        default=86_400, ge=0, description="how long the old secret still signs, s"
    )

    # -- SSRF guard ------------------------------------------------------------------
    allowed_networks: list[str] = Field(
        default_factory=list,
        description='addresses the SSRF guard lets through anyway, e.g. ["127.0.0.1/32"]',
    )

    # -- cache and metrics -------------------------------------------------------------
    cache_namespace: str = Field(default="webhooks", pattern=r"^[a-z0-9][a-z0-9_-]{0,60}$")
    cache_ttl_s: float = Field(default=60.0, gt=0, description="endpoint cache entries, s")
    gauge_refresh_s: float = Field(
        default=30.0, gt=0, description="how often database gauges are sampled, s"
    )

    # -- delivery log retention --------------------------------------------------------
    log_retention_days: float = Field(
        default=30.0,
        ge=0,
        description="finished deliveries (and their attempts, bodies included) older than "
        "this are deleted, days; 0 keeps them forever. Replays reach back this far at most",
    )
    log_prune_interval_s: float = Field(
        default=3_600.0, gt=0, description="how often the delivery log is pruned, s"
    )
    log_prune_batch: int = Field(
        default=1_000, ge=1, le=100_000, description="deliveries deleted per transaction"
    )

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        try:
            for value in values:
                ipaddress.ip_network(value.strip(), strict=False)
        except ValueError as error:
            raise ValueError(
                f"{error}; give networks such as '127.0.0.1/32' or '::1/128'"
            ) from None
        return values

    @field_validator("retry_schedule_ms")
    @classmethod
    def _schedule(cls, values: list[int]) -> list[int]:
        if any(v < 0 for v in values):
            raise ValueError("retry delays are >= 0 ms")
        return values

    @model_validator(mode="after")
    def _backstop_covers_the_schedule(self) -> WebhooksSettings:
        if self.max_deliveries <= len(self.retry_schedule_ms) + 1:
            raise ValueError(
                f"max_deliveries ({self.max_deliveries}) must exceed the attempts of the "
                f"retry schedule ({len(self.retry_schedule_ms) + 1})"
            )
        return self

    # -- derived ---------------------------------------------------------------------
    @property
    def disable_after(self) -> timedelta:
        return timedelta(seconds=self.disable_after_failing_s)

    @property
    def rotation_grace(self) -> timedelta:
        return timedelta(seconds=self.secret_rotation_grace_s)

    def stream(self, logical: str) -> str:
        """The stream actually used for logical stream ``logical``."""
        return self.stream_routes.get(logical, logical)
