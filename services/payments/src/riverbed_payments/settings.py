"""Settings of the payments service, from `PAYMENTS_*` variables (and the shared `REDIS_URL`).

Maps are JSON (``PAYMENTS_STREAM_ROUTES='{"payment.succeeded": "payment.succeeded.staging"}'``).
Durations carry their unit in the name.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from riverbed.settings import AdminApiSettings, admin_key_field
from riverbed.sql import DatabaseServiceSettings, database_url_field

#: the streams the ledger consumes
INBOUND_STREAMS = (
    "payment.succeeded",
    "payment.failed",
    "payment.refunded",
    "payment.dispute.opened",
    "payment.dispute.closed",
    "payment.payout.paid",
)


class PaymentsSettings(DatabaseServiceSettings, AdminApiSettings):
    # the rest of the configuration (errors never show the values) is DatabaseServiceSettings'
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_")

    service_name: str = "payments"
    port: int = 8003

    # -- storage -------------------------------------------------------------------
    database_url: SecretStr = database_url_field("var/payments/payments.db")

    # -- API ---------------------------------------------------------------------------
    # an admin key of its own, never the gateway's ingestion key (RIVERBED_API_KEY): the API
    # shows the ledger (financial data) and takes settlement reports
    api_key: SecretStr | None = admin_key_field("PAYMENTS_API_KEY")

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
