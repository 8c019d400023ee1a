"""The webhooks and payments admin APIs never open to the gateway's ingestion key.

``RIVERBED_API_KEY`` is held by everyone who may post events. The webhooks API hands out
signing secrets and decides where requests go, the payments API shows the ledger: each
takes an admin key of its own (``WEBHOOKS_API_KEY``, ``PAYMENTS_API_KEY``) and nothing
else. Every route of each app other than the public few (probes, metrics, the API
document) is enumerated from the app itself, so a route added later is checked too.
The deploy files (``make run``, compose, Kubernetes) give each service its own key and
never the ingestion key.
"""

from __future__ import annotations

import importlib.util
import re
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from riverbed.problems import PROBLEM_JSON
from riverbed_payments.bootstrap import create_service as create_payments
from riverbed_payments.settings import PaymentsSettings
from riverbed_webhooks.bootstrap import create_service as create_webhooks
from riverbed_webhooks.settings import WebhooksSettings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"

#: routes served without a key: probes, metrics and the API document with its viewers
PUBLIC = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}
ADMIN_KEY_VARIABLE = {"webhooks": "WEBHOOKS_API_KEY", "payments": "PAYMENTS_API_KEY"}
SERVICES: dict[str, tuple[type[BaseSettings], Callable[[Any], Any]]] = {
    "webhooks": (WebhooksSettings, create_webhooks),
    "payments": (PaymentsSettings, create_payments),
}
#: a floor on what each app serves behind its key, so that an enumeration that finds
#: nothing (a FastAPI change) fails instead of passing vacuously
AT_LEAST = {"webhooks": 15, "payments": 9}

INGESTION_KEY = "rbk_ingestion_" + secrets.token_urlsafe(16)
ADMIN_KEY = "admin_" + secrets.token_urlsafe(16)


def app_from_environment(
    service: str, monkeypatch: pytest.MonkeyPatch, admin_key: str | None
) -> FastAPI:
    """The service's app built as a deployment builds it: settings from the environment."""
    settings_class, create = SERVICES[service]
    monkeypatch.setenv("RIVERBED_API_KEY", INGESTION_KEY)
    if admin_key is None:
        monkeypatch.delenv(ADMIN_KEY_VARIABLE[service], raising=False)
    else:
        monkeypatch.setenv(ADMIN_KEY_VARIABLE[service], admin_key)
    app: FastAPI = create(settings_class()).app
    return app


def guarded_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route outside PUBLIC, path parameters filled in."""
    found = []
    for route in iter_route_contexts(app.routes):
        if route.path is None or route.path in PUBLIC:
            continue
        for method in sorted(route.methods or ()):
            if method != "HEAD":  # answered as its GET
                found.append((method, re.sub(r"\{[^}]+\}", "x", route.path)))
    return found


async def answers(app: FastAPI, key: str | None) -> dict[tuple[str, str], httpx.Response]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        return {
            (method, path): await client.request(method, path, headers=headers)
            for method, path in guarded_routes(app)
        }


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_the_ingestion_key_is_refused_on_every_admin_route(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_from_environment(service, monkeypatch, ADMIN_KEY)
    assert len(guarded_routes(app)) >= AT_LEAST[service]
    for route, answer in (await answers(app, INGESTION_KEY)).items():
        assert answer.status_code in (401, 403), (route, answer.status_code, answer.text)
        assert answer.headers["content-type"] == PROBLEM_JSON, route
    # the admin key gets past authentication (the service is not started: 503 starting)
    for route, answer in (await answers(app, ADMIN_KEY)).items():
        assert answer.status_code not in (401, 403), (route, answer.text)


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_with_only_the_ingestion_key_set_the_admin_api_stays_closed(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_from_environment(service, monkeypatch, None)
    for route, answer in (await answers(app, INGESTION_KEY)).items():
        assert answer.status_code == 503, (route, answer.text)
        problem = answer.json()
        assert problem["type"].endswith("/api-disabled"), route
        assert ADMIN_KEY_VARIABLE[service] in problem["detail"]
        assert "RIVERBED_API_KEY" not in problem["detail"], "no fallback is offered"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_an_admin_key_equal_to_the_ingestion_key_is_refused_at_start_up(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError, match="RIVERBED_API_KEY") as refused:
        app_from_environment(service, monkeypatch, INGESTION_KEY)
    assert INGESTION_KEY not in str(refused.value)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_compose_gives_each_admin_api_its_own_key_and_never_the_ingestion_key(
    service: str,
) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    env = compose["services"][service]["environment"]
    variable = ADMIN_KEY_VARIABLE[service]
    assert "RIVERBED_API_KEY" not in env
    assert env[variable].startswith(f"${{{variable}:?"), "required, from its own variable"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_kubernetes_takes_each_admin_key_from_a_secret_of_its_own(service: str) -> None:
    deployment = yaml.safe_load((DEPLOY / "k8s/base" / service / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    containers = [*pod.get("initContainers", []), *pod["containers"]]
    env = {e["name"]: e for container in containers for e in container.get("env", [])}
    assert "RIVERBED_API_KEY" not in env
    reference = env[ADMIN_KEY_VARIABLE[service]]["valueFrom"]["secretKeyRef"]
    assert reference["name"] == f"riverbed-{service}-admin"
    others = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for name, e in env.items()
        if name != ADMIN_KEY_VARIABLE[service] and "secretKeyRef" in e.get("valueFrom", {})
    }
    assert reference["name"] not in others, "the admin key shares its Secret with nothing"


@pytest.fixture(scope="module")
def launcher() -> ModuleType:
    """deploy/local/run.py (what ``make run`` runs), imported without running it."""
    spec = importlib.util.spec_from_file_location("riverbed_local_run", DEPLOY / "local/run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_make_run_gives_each_service_only_the_keys_that_are_its_own(launcher: ModuleType) -> None:
    base = {
        "PATH": "/usr/bin",
        "RIVERBED_API_KEY": "from-the-shell",
        "GATEWAY_ADMIN_API_KEY": "gateway-admin",
        "WEBHOOKS_API_KEY": "from-the-shell-too",
        "PAYMENTS_API_KEY": "from-the-shell-as-well",
    }
    admin = {"webhooks": "webhooks-admin", "payments": "payments-admin"}
    env = {
        name: launcher.keyed_environment(base, name, "ingestion", admin)
        for name in ("gateway", "email", "webhooks", "payments")
    }
    keys = {"RIVERBED_API_KEY", "GATEWAY_ADMIN_API_KEY", *ADMIN_KEY_VARIABLE.values()}
    assert {k: v for k, v in env["webhooks"].items() if k in keys} == {
        "WEBHOOKS_API_KEY": "webhooks-admin"
    }
    assert {k: v for k, v in env["payments"].items() if k in keys} == {
        "PAYMENTS_API_KEY": "payments-admin"
    }
    for name in ("gateway", "email"):
        assert {k: v for k, v in env[name].items() if k in keys} == {
            "RIVERBED_API_KEY": "ingestion"
        }
    assert all(e["PATH"] == "/usr/bin" for e in env.values())


def test_make_run_generates_and_prints_an_admin_key_unless_the_environment_has_one(
    launcher: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WEBHOOKS_API_KEY", raising=False)
    generated, for_curl = launcher.choose_key("WEBHOOKS_API_KEY", "webhooks admin key")
    assert len(generated) >= 32
    assert for_curl == generated
    assert generated in capsys.readouterr().out
    monkeypatch.setenv("WEBHOOKS_API_KEY", "chosen")
    assert launcher.choose_key("WEBHOOKS_API_KEY", "webhooks admin key") == (
        "chosen",
        "$WEBHOOKS_API_KEY",
    )
    assert "chosen" not in capsys.readouterr().out
