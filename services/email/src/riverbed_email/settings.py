"""Settings of the email service, from `EMAIL_*` variables (and the shared `REDIS_URL`).

Validated at start-up: a setting that cannot work (auth over plain text, an
unsubscribe URL that is not HTTPS, a templates directory that does not exist) stops
the service with a message naming the variable, rather than failing on the first mail.
"""

from __future__ import annotations

import string
from email.utils import parseaddr
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from riverbed.settings import ServiceSettings

#: SMTP retry delays, ms per retry (the last repeats). RFC 5321 §4.5.4.1 asks senders to
#: keep trying for days at intervals of 30 min or more; the first retries come sooner
#: because greylisting (451 4.7.1) usually lets a retry through after a few minutes.
#: With the default 20 attempts the last one is about 4.3 days after the first.
DEFAULT_RETRY_SCHEDULE_MS = (
    60_000,  # 1 min
    300_000,  # 5 min
    900_000,  # 15 min
    1_800_000,  # 30 min
    3_600_000,  # 1 h
    7_200_000,  # 2 h
    14_400_000,  # 4 h
    28_800_000,  # 8 h
)

#: recipient domains whose metrics get their own label; every other domain is "other",
#: so that the label stays bounded whatever addresses callers send to
DEFAULT_METRICS_DOMAINS = (
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "yahoo.com",
    "icloud.com",
    "me.com",
    "aol.com",
    "gmx.de",
    "web.de",
    "proton.me",
    "protonmail.com",
    "yandex.ru",
    "mail.ru",
    "qq.com",
    "163.com",
)

SmtpSecurity = Literal["starttls", "tls", "none"]
_DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "tls": 465, "none": 25}


class EmailSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EMAIL_", extra="ignore")

    service_name: str = "email"
    port: int = 8001
    stream: str = Field(
        default="email.requested",
        description="logical stream of email.requested commands (another for a staged rollout)",
    )

    # -- what is sent ------------------------------------------------------------
    from_address: str = Field(
        default="Riverbed <no-reply@riverbed.localhost>",
        description="From header; its address is also the envelope sender (MAIL FROM)",
    )
    message_id_domain: str | None = Field(
        default=None, description="right-hand side of Message-ID; default: the From domain"
    )
    templates_dir: Path | None = Field(
        default=None,
        description="directory of templates, one folder each: subject.txt, body.txt, body.html",
    )
    unsubscribe_url: str | None = Field(
        default=None,
        description=(
            "https URL put in List-Unsubscribe of bulk mail (RFC 8058); may contain {address} "
            "(URL-encoded recipient) and {token} (HMAC of it, needs EMAIL_UNSUBSCRIBE_SECRET)"
        ),
    )
    unsubscribe_secret: SecretStr | None = None

    # -- the SMTP relay ------------------------------------------------------------
    smtp_host: str = "127.0.0.1"
    smtp_port: int | None = Field(
        default=None, ge=1, le=65535, description="default: 587 starttls, 465 tls, 25 none"
    )
    smtp_security: SmtpSecurity = Field(
        default="starttls",
        description="starttls (required, not opportunistic), tls (implicit, port 465) or none",
    )
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = Field(default=60.0, gt=0, description="per SMTP command, s")
    smtp_validate_certs: bool = True
    smtp_ca_file: Path | None = Field(
        default=None, description="CA bundle to verify the relay with; default: the system's"
    )
    smtp_local_hostname: str | None = Field(
        default=None, description="name given in EHLO; default: this host's FQDN"
    )

    # -- retries and duplicates ----------------------------------------------------
    retry_schedule_ms: list[int] = Field(
        default=list(DEFAULT_RETRY_SCHEDULE_MS),
        min_length=1,
        description="delay before each retry, ms (JSON list; the last one repeats)",
    )
    max_attempts: int = Field(
        default=20,
        ge=1,
        description="deliveries of one request before it is given up (email.failed, DLQ)",
    )
    sent_marker_ttl_s: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        description="how long an accepted send is remembered against redelivery, s",
    )
    send_lease_s: int = Field(
        default=300,
        ge=10,
        description="a request being sent is held this long against other replicas, s "
        "(released as soon as its outcome is recorded; keep it above the handler timeout)",
    )

    # -- pace per recipient domain ---------------------------------------------------
    domain_rate_per_s: float = Field(default=5.0, gt=0, description="mails/s to one domain")
    domain_burst: int = Field(default=10, ge=1, description="mails to one domain at once")
    rate_limit_max_wait_ms: int = Field(
        default=2_000,
        ge=0,
        description="wait this long in-process for a domain's rate; longer: reschedule, ms",
    )
    slowdown_window_s: int = Field(
        default=600,
        ge=1,
        description="a domain answering 421/450/451/452 is slowed down for this long, s",
    )
    slowdown_max_level: int = Field(
        default=5, ge=1, le=16, description="each throttling reply halves the rate, this often"
    )

    metrics_domains: list[str] = Field(
        default=list(DEFAULT_METRICS_DOMAINS),
        description="domains with their own metrics label (JSON list); others are 'other'",
    )

    @field_validator("from_address")
    @classmethod
    def _from_has_an_address(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address or any(c in value for c in "\r\n"):
            raise ValueError(
                f"EMAIL_FROM_ADDRESS {value!r} has no usable address; give "
                "'no-reply@example.com' or 'Example <no-reply@example.com>'"
            )
        return value

    @field_validator("templates_dir")
    @classmethod
    def _templates_dir_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"EMAIL_TEMPLATES_DIR {str(value)!r} is not a directory")
        return value

    @field_validator("smtp_ca_file")
    @classmethod
    def _ca_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"EMAIL_SMTP_CA_FILE {str(value)!r} is not a file")
        return value

    @field_validator("metrics_domains")
    @classmethod
    def _lowercase_domains(cls, value: list[str]) -> list[str]:
        return [domain.strip().lower() for domain in value if domain.strip()]

    @model_validator(mode="after")
    def _coherent(self) -> EmailSettings:
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("set both EMAIL_SMTP_USERNAME and EMAIL_SMTP_PASSWORD, or neither")
        if self.smtp_username is not None and self.smtp_security == "none":
            raise ValueError(
                "SMTP auth over an unencrypted connection would expose the password: "
                "set EMAIL_SMTP_SECURITY to starttls or tls"
            )
        if self.unsubscribe_url is not None:
            self._check_unsubscribe_url(self.unsubscribe_url)
        return self

    def _check_unsubscribe_url(self, url: str) -> None:
        if not url.startswith("https://"):
            raise ValueError(
                f"EMAIL_UNSUBSCRIBE_URL {url!r} must be an https:// URL (RFC 8058 one-click)"
            )
        fields = {name for _, name, _, _ in string.Formatter().parse(url) if name is not None}
        unknown = fields - {"address", "token"}
        if unknown:
            raise ValueError(
                f"EMAIL_UNSUBSCRIBE_URL has unknown placeholders {sorted(unknown)}; "
                "accepted: {address}, {token}"
            )
        if "token" in fields and self.unsubscribe_secret is None:
            raise ValueError("EMAIL_UNSUBSCRIBE_URL uses {token}: set EMAIL_UNSUBSCRIBE_SECRET")

    @property
    def envelope_sender(self) -> str:
        """The bare address of ``from_address`` (MAIL FROM)."""
        return parseaddr(self.from_address)[1]

    @property
    def effective_message_id_domain(self) -> str:
        return self.message_id_domain or self.envelope_sender.rpartition("@")[2]

    @property
    def effective_smtp_port(self) -> int:
        return self.smtp_port or _DEFAULT_PORTS[self.smtp_security]
