"""Settings of the gateway, from `GATEWAY_*` variables (and the shared `REDIS_URL`).

API keys come from configuration at start-up (``GATEWAY_API_KEYS``, a JSON list,
plus ``RIVERBED_API_KEY`` for local runs) and from the key store in Redis that
``riverbed-gateway keys …`` manages. Configured keys may be given in clear (hashed at
load, never kept) or as their SHA-256 hex digest.
"""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from riverbed.settings import ServiceSettings

#: the variable of the schedules admin API's key (named in problem details and start-up errors)
ADMIN_KEY_SETTING = "GATEWAY_ADMIN_API_KEY"


class ConfiguredApiKey(BaseModel):
    """One API key from configuration: ``key`` (clear) or ``sha256`` (hex digest), and scopes."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    key: SecretStr | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    scopes: list[str] = Field(
        default=["*"],
        description="public event-type patterns it may publish, e.g. 'email.*' (default: "
        "every public type); a pattern matching no public type is refused at start-up",
    )

    @model_validator(mode="after")
    def _exactly_one_form(self) -> ConfiguredApiKey:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError(f"API key {self.name!r}: give exactly one of 'key' or 'sha256'")
        return self


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", populate_by_name=True)

    service_name: str = "gateway"
    port: int = 8000

    api_keys: list[ConfiguredApiKey] = Field(default_factory=list)
    local_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("RIVERBED_API_KEY", "GATEWAY_LOCAL_API_KEY"),
        description="the key `make run` hands out (name and id 'local'); every public type",
    )
    key_cache_s: float = Field(
        default=5.0, ge=0, description="how long a key looked up in Redis is trusted, s"
    )

    max_body_bytes: int = Field(default=256 * 1024, ge=1024, description="request body cap")
    max_batch_events: int = Field(default=500, ge=1, le=10_000)

    idempotency_ttl_s: int = Field(default=24 * 3600, ge=60, description="Idempotency-Key window")
    in_flight_ttl_s: int = Field(
        default=30, ge=1, description="how long a request holds its key before it counts as dead"
    )

    rate_limit_per_s: float = Field(default=2_000.0, gt=0, description="events/s per API key")
    rate_limit_burst: int = Field(default=4_000, ge=1, description="events allowed at once")

    max_delay_s: int = Field(
        default=90 * 86_400,
        ge=1,
        le=366 * 86_400,  # a delayed event holds Redis memory until it is due: at most a year
        description="how far ahead an event may be delivered (deliver_at or delay), s; 90 days",
    )

    max_unhandled_events: int = Field(
        default=100_000,
        ge=1,
        # GATEWAY_MAX_GROUP_LAG: the name before pending entries and due items counted too
        validation_alias=AliasChoices("GATEWAY_MAX_UNHANDLED_EVENTS", "GATEWAY_MAX_GROUP_LAG"),
        description="backpressure ceiling, events: the most-behind group's lag + pending, plus "
        "the stream's due items waiting in the delay store",
    )
    backpressure_refresh_s: float = Field(
        default=1.0, gt=0, description="how often stream sizes are sampled, s"
    )
    retry_after_s: int = Field(default=5, ge=1, description="Retry-After sent with a 503")

    min_replicas: int = Field(
        default=0,
        ge=0,
        description="replicas that must acknowledge an append (Redis WAIT) before the gateway "
        "answers 202; fewer within replication_timeout_ms: 503. 0: off (no WAIT)",
    )
    replication_timeout_ms: int = Field(
        default=500,
        ge=1,
        description="how long the gateway waits for min_replicas to acknowledge, ms",
    )

    inbound_secrets: dict[str, list[SecretStr]] = Field(
        default_factory=dict,
        description="provider -> webhook signing secrets (several during a rotation)",
    )
    inbound_tolerance_s: int = Field(default=300, ge=1, description="signature timestamp tolerance")

    admin_api_key: SecretStr | None = Field(
        default=None,
        description="GATEWAY_ADMIN_API_KEY: the key of the schedules admin API (/v1/schedules); "
        "a key of its own (ingestion keys are refused there); unset: that API is not served",
    )
    run_scheduler: bool = Field(
        default=True,
        description="publish recurring schedules' due occurrences (riverbed.schedules); safe "
        "in every replica: each occurrence is published once",
    )
