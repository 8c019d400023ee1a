"""deploy/compose.yaml: valid against the Compose Specification, and wired as documented.

The schema is vendored (deploy/schemas/compose-spec.json; see the README there): tests
run offline. Beyond the schema, the file is read for what the stack relies on: every
service healthy before its dependants start, the shipped Redis configuration, the
conventions' ports, hardened service containers, the Redis exporter beside Redis, and
Prometheus and Grafana pointed at the right places.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SCHEMA = DEPLOY / "schemas" / "compose-spec.json"
SERVICES = {"gateway": 8000, "email": 8001, "webhooks": 8002, "payments": 8003}
DRAIN_S = 30  # RIVERBED_CONSUMER_SHUTDOWN_TIMEOUT_S
EXPORTER_PORT = 9121  # the Redis exporter's default listen port


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def _validator() -> jsonschema.Draft201909Validator:
    schema = json.loads(SCHEMA.read_text())
    # the file says draft 2019-09, spelled http://…/schema# (which jsonschema does not
    # recognise by that spelling): name the draft explicitly
    assert "2019-09" in schema["$schema"]
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def _mounts(volumes: list[str]) -> dict[str, str]:
    """``source:target[:mode]`` entries as {target: source}."""
    return {v.split(":")[1]: v.split(":")[0] for v in volumes}


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in sorted(units, key=len, reverse=True):
        if duration.endswith(unit) and duration[: -len(unit)].isdigit():
            return int(duration[: -len(unit)]) * units[unit]
    raise AssertionError(f"not a duration: {duration!r}")


def test_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any],
) -> None:
    errors = sorted(_validator().iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_schema_rejects_what_compose_would_refuse(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["depends_on"]["redis"]["condition"] = "healthy"
    broken["services"]["email"]["healthcheck"]["intervall"] = "5s"
    paths = {tuple(e.path)[:3] for e in _validator().iter_errors(broken)}
    assert ("services", "gateway", "depends_on") in paths
    assert ("services", "email", "healthcheck") in paths


def test_every_service_is_there_with_a_healthcheck_and_healthy_dependencies(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    expected = {*SERVICES, "redis", "redis-exporter", "mail-sink", "prometheus", "grafana"}
    assert set(services) == expected
    for name, service in services.items():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", f"{name}: exec form, no shell needed in the image"
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}"
    for name in SERVICES:
        assert "redis" in services[name]["depends_on"]
    assert "mail-sink" in services["email"]["depends_on"]
    assert "prometheus" in services["grafana"]["depends_on"]


def test_redis_runs_the_shipped_configuration(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    mounts = _mounts(redis["volumes"])
    config_in_container = redis["command"][1]
    assert redis["command"][0] == "redis-server"
    assert (COMPOSE.parent / mounts[config_in_container]).resolve() == (
        DEPLOY / "redis" / "redis.conf"
    )
    assert mounts["/data"] == "redis-data", "AOF on a named volume"
    assert "ports" not in redis, "Redis is not published on the host"
    assert redis["networks"] == ["backend"]
    assert compose["networks"]["backend"]["internal"] is True


def test_redis_exporter_watches_the_stacks_redis_and_prometheus_scrapes_it(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    exporter = services["redis-exporter"]
    image, _, tag = exporter["image"].partition(":")
    assert image == "oliver006/redis_exporter"
    assert re.fullmatch(r"v\d+\.\d+\.\d+-alpine", tag), f"pin a release, not {tag!r}"
    assert exporter["environment"]["REDIS_ADDR"] == "redis://redis:6379"
    assert exporter["depends_on"] == {"redis": {"condition": "service_healthy"}}
    # Redis on the internal network, Prometheus on the default one; nothing published
    assert set(exporter["networks"]) == {"backend", "default"}
    assert "ports" not in exporter
    assert exporter["read_only"] is True
    assert exporter["cap_drop"] == ["ALL"]
    assert not exporter["user"].startswith("0"), "not root"
    assert f"127.0.0.1:{EXPORTER_PORT}/health" in exporter["healthcheck"]["test"][-1]
    assert "redis-exporter" in services["prometheus"]["depends_on"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for s in job["static_configs"] for t in s["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets["riverbed-redis-exporter"] == [f"redis-exporter:{EXPORTER_PORT}"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_riverbed_services_follow_the_conventions_and_are_hardened(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    port = SERVICES[name]
    prefix = name.upper() + "_"
    assert (COMPOSE.parent / service["build"]["context"]).resolve() == ROOT
    assert service["build"]["dockerfile"] == f"deploy/docker/{name}.Dockerfile"
    assert (ROOT / service["build"]["dockerfile"]).is_file()
    assert service["ports"] == [f"127.0.0.1:{port}:{port}"]
    env = service["environment"]
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert env[f"{prefix}PORT"] == str(port)
    assert env[f"{prefix}HOST"] == "0.0.0.0"
    assert service["healthcheck"]["test"] == [
        "CMD",
        "python",
        "/app/healthcheck.py",
        f"{prefix}PORT",
        "/readyz",
    ]
    assert service["read_only"] is True
    assert service["tmpfs"] == ["/tmp"]
    assert service["user"] == "10001:10001"
    assert service["cap_drop"] == ["ALL"]
    assert service["stop_signal"] == "SIGTERM"
    assert _seconds(service["stop_grace_period"]) > DRAIN_S
    assert env["RIVERBED_CONSUMER_SHUTDOWN_TIMEOUT_S"] == str(DRAIN_S)
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        assert source in compose["volumes"], "only named volumes are writable"
        assert env.get(f"{prefix}DATABASE_URL", "").endswith(f"{target}/{name}.db")


def test_email_sends_to_the_local_sink(compose: dict[str, Any]) -> None:
    services = compose["services"]
    sink = services["mail-sink"]
    assert sink["entrypoint"][1:3] == ["-m", "riverbed_email.sink"]
    assert (ROOT / "services/email/src/riverbed_email/sink.py").is_file()
    sink_port = sink["entrypoint"][sink["entrypoint"].index("--port") + 1]
    env = services["email"]["environment"]
    assert env["EMAIL_SMTP_HOST"] == "mail-sink"
    assert env["EMAIL_SMTP_PORT"] == sink_port
    assert env["EMAIL_SMTP_SECURITY"] == "none"
    assert f"('127.0.0.1', {sink_port})" in sink["healthcheck"]["test"][-1]


def test_prometheus_scrapes_every_service_with_the_rules(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = _mounts(prometheus["volumes"])
    config_path = COMPOSE.parent / mounts["/etc/prometheus/prometheus.yml"]
    assert config_path.resolve() == DEPLOY / "prometheus" / "prometheus.yml"
    assert (COMPOSE.parent / mounts["/etc/prometheus/rules"]).resolve() == (
        DEPLOY / "prometheus" / "rules"
    )
    config = yaml.safe_load(config_path.read_text())
    assert config["rule_files"] == ["rules/*.yml"]  # relative to the config file
    targets = {
        job["job_name"]: [t for s in job["static_configs"] for t in s["targets"]]
        for job in config["scrape_configs"]
    }
    for name, port in SERVICES.items():
        assert targets[f"riverbed-{name}"] == [f"{name}:{port}"]
        assert "default" in compose["services"][name]["networks"], "reachable by Prometheus"


def test_grafana_is_provisioned_with_the_datasource_and_dashboard(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    mounts = _mounts(grafana["volumes"])
    provisioning = COMPOSE.parent / mounts["/etc/grafana/provisioning"]
    dashboards_dir = mounts["/var/lib/grafana/dashboards"]
    assert (COMPOSE.parent / dashboards_dir / "riverbed.json").is_file()
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090"
    assert "9090:9090" in compose["services"]["prometheus"]["ports"][0]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "riverbed.yml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/var/lib/grafana/dashboards/riverbed.json"
