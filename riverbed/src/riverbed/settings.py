"""Runtime settings, from the environment, validated at start-up.

Each service subclasses :class:`ServiceSettings` with its own prefix
(``EMAIL_``, ``WEBHOOKS_``…); the Redis URL is the shared ``REDIS_URL``.
"""

from __future__ import annotations

import hmac
import os
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class RedisSettings(BaseSettings):
    """How to reach Redis: ``REDIS_URL`` (redis://, rediss://, unix://; ACL user:password in it),
    or the master a set of Sentinels names (``REDIS_SENTINELS``, ``REDIS_SENTINEL_MASTER``)."""

    # hide_input_in_errors: a refused URL may carry a password
    model_config = SettingsConfigDict(
        env_prefix="REDIS_", extra="ignore", hide_input_in_errors=True
    )

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    cache_url: SecretStr | None = Field(
        default=None,
        description="REDIS_CACHE_URL: a Redis of its own for the global cache (e.g. with "
        "allkeys-lru), so the streams' Redis can run with noeviction; default: REDIS_URL",
    )
    socket_timeout: float = Field(default=10.0, gt=0, description="seconds, per command")
    connect_timeout: float = Field(default=5.0, gt=0, description="seconds")
    max_connections: int = Field(default=64, ge=2, description="per Redis node")
    cluster: bool = Field(
        default=False,
        description="REDIS_URL names one node of a Redis Cluster; the client finds the rest",
    )

    sentinels: Annotated[list[tuple[str, int]], NoDecode] = Field(
        default_factory=list,
        description="REDIS_SENTINELS: host:port of each Sentinel, comma-separated; the "
        "streams' Redis (and the cache's unless REDIS_CACHE_URL) is the master they name",
    )
    sentinel_master: str | None = Field(
        default=None,
        min_length=1,
        description="REDIS_SENTINEL_MASTER: the master's name in the Sentinels' "
        "`sentinel monitor <name> ...` line",
    )
    sentinel_username: str | None = Field(
        default=None, description="REDIS_SENTINEL_USERNAME: ACL user of the Sentinels themselves"
    )
    sentinel_password: SecretStr | None = Field(
        default=None,
        description="REDIS_SENTINEL_PASSWORD: the Sentinels' own password (their requirepass); "
        "the master's credentials stay in REDIS_URL",
    )

    @field_validator("sentinels", mode="before")
    @classmethod
    def _sentinel_addresses(cls, value: object) -> object:
        if isinstance(value, str):
            return [_sentinel_address(part) for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _one_topology(self) -> RedisSettings:
        if self.sentinels and self.sentinel_master is None:
            raise ValueError(
                "REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not: name the master the "
                "Sentinels monitor (the <name> of their `sentinel monitor <name> ...` line)"
            )
        if self.sentinel_master is not None and not self.sentinels:
            raise ValueError(
                "REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS is not: list the Sentinels "
                "as host:port,host:port,..."
            )
        if self.sentinels and self.cluster:
            raise ValueError(
                "REDIS_CLUSTER and REDIS_SENTINELS are exclusive: a Redis Cluster fails over "
                "by itself; set one of them"
            )
        if self.sentinels and self.url.get_secret_value().startswith("unix://"):
            raise ValueError(
                "REDIS_URL is unix:// but REDIS_SENTINELS is set: Sentinel names the master "
                "by host and port; use redis:// or rediss:// (its host and port are ignored, "
                "its user, password, database and TLS apply)"
            )
        return self

    @field_validator("url", "cache_url")
    @classmethod
    def _known_scheme(cls, url: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if url is None:
            return None
        name = "REDIS_URL" if info.field_name == "url" else "REDIS_CACHE_URL"
        scheme, sep, _ = url.get_secret_value().partition("://")
        if not sep:
            raise ValueError(f"{name} must start with redis://, rediss:// or unix://")
        if scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(
                f"{name} scheme {scheme!r} is not supported; use redis://, rediss:// or unix://"
            )
        return url


def _sentinel_address(entry: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:26379`` for IPv6) of one Sentinel, or a clear refusal."""
    host, sep, port = entry.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65_536:
        raise ValueError(
            f"REDIS_SENTINELS entry {entry.strip()!r} is not host:port; expected e.g. "
            "'10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379' (port 1-65535)"
        )
    return host, int(port)


class RedisHealthSettings(BaseSettings):
    """How each service watches its Redis (``RIVERBED_REDIS_``): :mod:`riverbed.redis_health`."""

    model_config = SettingsConfigDict(env_prefix="RIVERBED_REDIS_", extra="ignore")

    probe_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="PING and INFO every node this often, s; /readyz turns 503 within one "
        "interval of Redis becoming unreachable",
    )
    probe_timeout_s: float = Field(
        default=1.0, gt=0, description="a PING unanswered this long counts as down, s"
    )


class ConsumerSettings(BaseSettings):
    """Knobs of the reliable consumer; all durations in milliseconds unless named otherwise."""

    model_config = SettingsConfigDict(env_prefix="RIVERBED_CONSUMER_", extra="ignore")

    batch_size: int = Field(default=100, ge=1, le=10_000, description="entries per XREADGROUP")
    block_ms: int = Field(default=2_000, ge=1, description="XREADGROUP BLOCK, ms")
    concurrency: int = Field(
        default=200, ge=1, description="handlers running at once (2 batches keeps reads full)"
    )
    max_deliveries: int = Field(
        default=5, ge=1, description="deliveries before an entry is dead-lettered"
    )
    visibility_timeout_ms: int = Field(
        default=60_000,
        ge=100,
        description="an entry idle this long without keep-alive is presumed abandoned, ms",
    )
    reclaim_interval_ms: int = Field(default=5_000, ge=10, description="reclaim/retry scan, ms")
    retry_base_ms: int = Field(default=1_000, ge=1, description="first retry delay, ms")
    retry_max_ms: int = Field(default=300_000, ge=1, description="cap on a retry delay, ms")
    retry_jitter: float = Field(default=0.2, ge=0, le=1, description="± fraction of a delay")
    ack_flush_ms: int = Field(default=5, ge=0, description="max wait to group acks, ms")
    idempotency_ttl_s: int = Field(
        default=24 * 3600, ge=1, description="how long a handled event id is remembered, s"
    )
    consumer_idle_remove_ms: int = Field(
        default=3_600_000,
        ge=1_000,
        description="remove consumers idle this long with nothing pending, ms",
    )
    shutdown_timeout_s: float = Field(default=30.0, gt=0, description="drain limit on SIGTERM, s")
    heartbeat_interval_ms: int = Field(
        default=1_000, ge=10, description="how often a consumer says it is alive, ms"
    )
    heartbeat_timeout_ms: int = Field(
        default=5_000,
        ge=50,
        description="a consumer silent this long is dead: a sibling takes over its pending "
        "entries at once, without waiting for the visibility timeout, ms",
    )
    handler_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="a handler running longer is cancelled and its delivery counted as failed "
        "(reason timeout), s; a subscription may set its own",
    )
    promote_interval_ms: int = Field(
        default=500,
        ge=10,
        le=60_000,
        description="longest wait between two looks at the delay store for due items, ms "
        "(a replica's own retries wake it sooner; bounds how late a delayed event can be)",
    )
    promote_batch: int = Field(
        default=1_000, ge=1, le=10_000, description="due items moved onto the stream per script"
    )

    @property
    def keepalive_interval_ms(self) -> int:
        """Refresh held entries 3 times per visibility timeout: one missed beat is harmless."""
        return max(self.visibility_timeout_ms // 3, 10)


class RetentionSettings(BaseSettings):
    """How long entries stay where acknowledgements cannot say (``RIVERBED_RETENTION_``).

    A stream some group consumes is trimmed to what every group acknowledged; a stream
    nobody consumes (outcome events: ``email.sent``, ``webhook.delivery.succeeded``…) and
    every dead-letter stream are trimmed by age instead, so no stream grows forever.
    """

    model_config = SettingsConfigDict(env_prefix="RIVERBED_RETENTION_", extra="ignore")

    unconsumed_days: float = Field(
        default=7.0, gt=0, description="entries of a stream no group reads are kept this long, days"
    )
    dead_letter_days: float = Field(
        default=30.0, gt=0, description="dead-lettered entries are kept this long, days"
    )
    per_stream_days: dict[str, float] = Field(
        default_factory=dict,
        description="JSON object: logical stream -> days, for streams no group reads "
        'instead of unconsumed_days, e.g. {"email.sent": 1}',
    )

    @field_validator("per_stream_days")
    @classmethod
    def _positive(cls, days: dict[str, float]) -> dict[str, float]:
        bad = sorted(stream for stream, value in days.items() if value <= 0)
        if bad:
            raise ValueError(f"retention must be more than 0 days; not so for {bad}")
        return days

    def unconsumed_ms(self, stream: str) -> int:
        return int(self.per_stream_days.get(stream, self.unconsumed_days) * 86_400_000)

    @property
    def dead_letter_ms(self) -> int:
        return int(self.dead_letter_days * 86_400_000)


class ServiceSettings(BaseSettings):
    """Shared shape of a service's settings; subclasses set ``env_prefix``."""

    model_config = SettingsConfigDict(extra="ignore")

    service_name: str = "riverbed"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    consumer_name: str | None = Field(
        default=None,
        description="stable consumer name (pod name); default: HOSTNAME from the "
        "environment, else host-pid; a name a live process already uses gets -<pid> added",
    )
    retention_interval_s: float = Field(
        default=60.0, gt=0, description="how often acknowledged entries are trimmed, s"
    )
    log_level: str = "INFO"
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")
    header_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="a connection whose request head (request line and headers) is not "
        "complete this long after the connection opened, or after the head's first byte, "
        "is closed, s: idle and slowly trickled heads hold no connection open",
    )
    keep_alive_timeout_s: int = Field(
        default=5,
        ge=1,
        description="an idle keep-alive connection (after a response) is closed after this, s",
    )


def admin_key(value: SecretStr | None, setting: str) -> SecretStr | None:
    """``value`` as the key of a service's admin API, read from ``setting``: blank means none
    (the API answers 503), and the ingestion key of this environment (``RIVERBED_API_KEY``)
    is refused, so that whoever may post events cannot also administer the service (read
    the ledger, hand out signing secrets)."""
    if value is None or not value.get_secret_value().strip():
        return None
    ingestion = os.environ.get("RIVERBED_API_KEY", "")
    if ingestion and hmac.compare_digest(value.get_secret_value().encode(), ingestion.encode()):
        raise ValueError(
            f"{setting} must not be the ingestion key (RIVERBED_API_KEY): give this admin API "
            "a key of its own, e.g. `openssl rand -hex 32`"
        )
    return value


def admin_key_field(setting: str) -> Any:
    """The ``api_key`` setting of a service's admin API, read from variable ``setting``
    (``PAYMENTS_API_KEY``) only: a service declares
    ``api_key: SecretStr | None = admin_key_field("<PREFIX>API_KEY")``."""
    return Field(
        default=None,
        validation_alias=AliasChoices(setting, "api_key"),
        description=f"Bearer key of the /v1 API ({setting} only); without one the API answers 503",
    )


class AdminApiSettings(BaseSettings):
    """Mixin of the settings of a service with an admin HTTP API behind a key of its own
    (:func:`admin_key`): the webhooks and payments APIs hand out secrets and financial data,
    so the gateway's ingestion key must never open them too.

    Subclasses redeclare ``api_key`` with :func:`admin_key_field` to name its variable; the
    check here names ``<env_prefix>API_KEY`` in its refusal.
    """

    api_key: SecretStr | None = None  # <env_prefix>API_KEY, unless redeclared

    @field_validator("api_key")
    @classmethod
    def _admin_key(cls, value: SecretStr | None) -> SecretStr | None:
        return admin_key(value, f"{cls.model_config.get('env_prefix', '')}API_KEY")
