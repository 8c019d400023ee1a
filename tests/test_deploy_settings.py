"""Every environment variable the deploy files set is one a Riverbed service reads.

Settings ignore unknown variables (``extra="ignore"``), so a misspelt or stale name in
compose.yaml, a Kubernetes manifest or a Dockerfile would be silently without effect.
This reads the names from all three and checks them against the settings classes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from riverbed.settings import ConsumerSettings, RedisSettings
from riverbed_email.settings import EmailSettings
from riverbed_gateway.settings import GatewaySettings
from riverbed_payments.settings import PaymentsSettings
from riverbed_webhooks.settings import WebhooksSettings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SETTINGS: dict[str, type[BaseSettings]] = {
    "gateway": GatewaySettings,
    "email": EmailSettings,
    "webhooks": WebhooksSettings,
    "payments": PaymentsSettings,
}
#: read by Python itself, not by Riverbed
INTERPRETER = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}


def names_read_by(*classes: type[BaseSettings]) -> set[str]:
    """Environment variable names the settings classes read (prefix + field, or aliases)."""
    names: set[str] = set()
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix", ""))
        for field_name, field in cls.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names |= {c.upper() for c in alias.choices if isinstance(c, str)}
            elif isinstance(alias, str):
                names.add(alias.upper())
            names.add(f"{prefix}{field_name}".upper())
    return names


def readable(service: str) -> set[str]:
    return names_read_by(SETTINGS[service], RedisSettings, ConsumerSettings) | INTERPRETER


def compose_environment() -> dict[str, set[str]]:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return {name: set(compose["services"][name]["environment"]) for name in SETTINGS}


def kubernetes_environment() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for service in SETTINGS:
        deployment = yaml.safe_load((DEPLOY / "k8s/base" / service / "deployment.yaml").read_text())
        pod = deployment["spec"]["template"]["spec"]
        found[service] = {
            e["name"]
            for container in [*pod.get("initContainers", []), *pod["containers"]]
            for e in container["env"]
        }
    return found


def dockerfile_environment() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for service in SETTINGS:
        text = (DEPLOY / "docker" / f"{service}.Dockerfile").read_text()
        final_stage = text.rsplit("\nFROM ", 1)[1].replace("\\\n", " ")
        found[service] = {
            name
            for line in final_stage.splitlines()
            if line.startswith("ENV ")
            for name in re.findall(r"([A-Z][A-Z0-9_]*)=", line)
        }
    return found


@pytest.mark.parametrize(
    "source",
    [compose_environment, kubernetes_environment, dockerfile_environment],
    ids=["compose", "kubernetes", "dockerfiles"],
)
def test_every_variable_set_is_a_setting_the_service_reads(
    source: Callable[[], dict[str, set[str]]],
) -> None:
    found = source()
    assert set(found) == set(SETTINGS)
    unknown = {service: sorted(names - readable(service)) for service, names in found.items()}
    assert not any(unknown.values()), f"variables no setting reads: {unknown}"


def test_a_misspelt_variable_would_be_caught() -> None:
    assert "EMAIL_SMTP_HOST" in readable("email")
    assert "EMAIL_SMTP_HOSTNAME" not in readable("email")
    assert "RIVERBED_API_KEY" in readable("gateway")  # an alias
