"""Settings of the payments service, from `PAYMENTS_*` variables (and the shared `REDIS_URL`).

Maps are JSON (``PAYMENTS_STREAM_ROUTES='{"payment.succeeded": "payment.succeeded.staging"}'``).
Durations carry their unit in the name.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from riverbed.sql import DatabaseServiceSettings

#: the streams the ledger consumes
INBOUND_STREAMS = (
    "payment.succeeded",
    "payment.failed",
    "payment.refunded",
    "payment.dispute.opened",
    "payment.dispute.closed",
    "payment.payout.paid",
)


class PaymentsSettings(DatabaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore", populate_by_name=True)

    service_name: str = "payments"
    port: int = 8003

    # -- storage -------------------------------------------------------------------
    database_url: SecretStr = Field(
        default=SecretStr("sqlite+aiosqlite:///var/payments/payments.db"),
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://…",
    )

    # -- API ---------------------------------------------------------------------------
    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PAYMENTS_API_KEY", "RIVERBED_API_KEY", "api_key"),
        description="Bearer key of the /v1 API; without one the API answers 503",
    )

    # -- streams -------------------------------------------------------------------------
    stream_routes: dict[str, str] = Field(
        default_factory=dict,
        description="logical stream -> stream actually used, for the streams this service "
        "reads and writes (tests, staging)",
    )
    out_of_order_retry_ms: int = Field(
        default=5_000,
        ge=1,
        description="first wait before retrying a refund or dispute whose payment is not "
        "recorded yet (its event may still be on its way); later waits grow with the time "
        "waited, up to 5 min, ms",
    )
    out_of_order_max_wait_s: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="how long a refund or dispute waits for its payment (or a dispute's "
        "closing for its opening) after this service first received it, before it is "
        "dead-lettered; retries while it waits do not count as deliveries, s",
    )

    # -- receipts ---------------------------------------------------------------------------
    receipts: bool = Field(
        default=True,
        description="ask the email service for a receipt (email.requested) when a recorded "
        "payment has a receipt address",
    )

    # the outbox's settings (PAYMENTS_OUTBOX_*) are the runtime's: DatabaseServiceSettings

    # -- reconciliation ---------------------------------------------------------------------------
    report_max_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1024, description="largest settlement report accepted, bytes"
    )
    report_max_record_chars: int = Field(
        default=64 * 1024, ge=256, description="longest CSV record accepted, characters"
    )
    report_chunk_lines: int = Field(
        default=500, ge=1, le=10_000, description="lines stored and matched per transaction"
    )
    reconciliation_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="a replica matching a report holds it this long, renewed while it works; "
        "a crashed replica's report is taken over after this, s",
    )
    reconciliation_sweep_s: float = Field(
        default=30.0, gt=0, description="how often unfinished reports are looked for, s"
    )

    def stream(self, logical: str) -> str:
        """The stream actually used for logical stream ``logical``."""
        return self.stream_routes.get(logical, logical)
