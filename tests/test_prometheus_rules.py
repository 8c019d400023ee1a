"""deploy/prometheus: the configurations and alert rules are valid, every alert is unit-tested
with ``promtool test rules`` (firing and quiet), has a runbook, and every metric that a rule
or a dashboard panel queries is one the services export.

promtool comes with Debian's ``prometheus`` package, which .ci/run installs; without it the
promtool tests are skipped, saying so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules" / "riverbed.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "riverbed.json"
README = ROOT / "deploy" / "README.md"
METRIC = re.compile(r"\b(riverbed_[a-z0-9_]+|up)\b")

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian: apt-get install prometheus; .ci/run does)",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, check=False, timeout=120
    )


def alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def dashboard_queries() -> dict[str, str]:
    """Every PromQL query of the dashboard, by panel title and refId."""
    dashboard = json.loads(DASHBOARD.read_text())
    return {
        f"{panel['title']} / {target['refId']}": target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    }


def exported_metrics() -> set[str]:
    """Sample names the runtime and every service can export (their metrics modules)."""
    import riverbed.metrics
    import riverbed_email.metrics
    import riverbed_gateway.metrics
    import riverbed_payments.metrics
    import riverbed_webhooks.metrics

    del riverbed, riverbed_email, riverbed_gateway, riverbed_payments, riverbed_webhooks
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in suffixes.get(family.type, ("",))
    } | {"up"}


@needs_promtool
def test_compose_configuration_and_its_rules_are_valid() -> None:
    result = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 19 rules found" in result.stdout


@needs_promtool
def test_kubernetes_configuration_is_valid_apart_from_its_service_discovery(
    tmp_path: Path,
) -> None:
    """Debian builds Prometheus without Kubernetes discovery, so promtool cannot parse
    ``kubernetes_sd_configs``: the rest (relabelling, rule files) is checked without it."""
    config = yaml.safe_load((PROMETHEUS / "prometheus-kubernetes.yml").read_text())
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
        job["static_configs"] = [{"targets": ["pod:8001"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copytree(PROMETHEUS / "rules", tmp_path / "rules")
    result = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_rules_are_valid() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    assert RULE_TESTS
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


@needs_promtool
def test_a_wrong_expectation_fails_the_unit_tests(tmp_path: Path) -> None:
    """The promtool tests have teeth: claim an alert that cannot fire, and they fail."""
    tests = yaml.safe_load(RULE_TESTS[0].read_text())
    tests["rule_files"] = [str(RULES)]
    case = tests["tests"][0]
    for check in case["alert_rule_test"]:
        check["exp_alerts"] = [{"exp_labels": {"severity": "none"}}]
    tests["tests"] = [case]
    broken = tmp_path / "broken.test.yml"
    broken.write_text(yaml.safe_dump(tests))
    assert promtool("test", "rules", str(broken)).returncode != 0


def test_every_alert_is_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        document = yaml.safe_load(path.read_text())
        assert document["rule_files"] == ["../rules/riverbed.yml"], path.name
        for case in document["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert set(alerts()) <= firing, f"never seen firing: {set(alerts()) - firing}"
    assert set(alerts()) <= quiet, f"never seen quiet: {set(alerts()) - quiet}"
    assert firing | quiet <= set(alerts()), "a test names an alert that does not exist"


def test_every_alert_has_a_severity_and_a_runbook_section() -> None:
    readme = README.read_text()
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, name
        assert rule["annotations"]["runbook"] == f"deploy/README.md#{name.lower()}"
        section = re.search(rf"^### {name}\n(.*?)(?=^##|\Z)", readme, re.S | re.M)
        assert section, f"deploy/README.md has no '### {name}' runbook"
        for part in ("**Means**", "**Look at**", "**Do**"):
            assert part in section.group(1), f"runbook of {name} lacks {part}"


def test_rules_and_dashboard_query_only_metrics_the_services_export() -> None:
    exported = exported_metrics()
    queries = {f"alert {n}": r["expr"] for n, r in alerts().items()} | dashboard_queries()
    unknown = {
        where: sorted(set(METRIC.findall(expr)) - exported)
        for where, expr in queries.items()
        if set(METRIC.findall(expr)) - exported
    }
    assert not unknown, f"queries of metrics no service exports: {unknown}"


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel's query as a recording rule, Grafana variables filled in."""
    variables = {"$__rate_interval": "5m", "$__interval": "1m", "$stream": ".*"}
    rules = []
    for i, expr in enumerate(dashboard_queries().values()):
        for variable, value in variables.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


#: labels Prometheus itself adds (targets, histogram and summary samples)
PROMETHEUS_LABELS = {"job", "instance", "le", "quantile", "__name__"}
#: labels of the Redis exporter's series (redis_*), as a live prometheus-redis-exporter
#: exports them: cmd (commandstats), role and friends (redis_instance_info), master_* (a
#: replica's link), slave_* (a primary's replicas), db (keyspace)
REDIS_EXPORTER_LABELS = {
    "cmd",
    "role",
    "redis_mode",
    "redis_version",
    "maxmemory_policy",
    "master_host",
    "master_port",
    "slave_ip",
    "slave_port",
    "slave_state",
    "db",
}
SELECTOR = re.compile(r"\{([^{}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def declared_labels() -> set[str]:
    """Label names the runtime's and the services' metrics declare, plus Prometheus' own
    and the Redis exporter's."""
    exported_metrics()  # imports every metrics module
    names = PROMETHEUS_LABELS | REDIS_EXPORTER_LABELS
    for collector in list(REGISTRY._collector_to_names):
        names |= set(getattr(collector, "_labelnames", ()))
    return names


def labels_used(expr: str) -> set[str]:
    found = {name for inner in SELECTOR.findall(expr) for name in MATCHER.findall(inner)}
    for inner in GROUPING.findall(expr):
        found |= {name.strip() for name in inner.split(",") if name.strip()}
    return found


def test_rules_dashboard_and_rule_tests_use_only_labels_the_metrics_declare() -> None:
    """An alert or panel on a label no metric has (say a per-endpoint ``endpoint`` label,
    which the public /metrics no longer carries) would never match anything."""
    declared = declared_labels()
    queries = {f"alert {n}": r["expr"] for n, r in alerts().items()} | dashboard_queries()
    for path in RULE_TESTS:
        for i, case in enumerate(yaml.safe_load(path.read_text())["tests"]):
            for series in case.get("input_series", []):
                queries[f"{path.name} test {i}"] = series["series"]
    unknown = {
        where: sorted(labels_used(expr) - declared)
        for where, expr in queries.items()
        if labels_used(expr) - declared
    }
    assert not unknown, f"labels no metric declares: {unknown}"
    assert labels_used('sum by (stream, group) (x{type=~"a", reason!="b"})') == {
        "stream",
        "group",
        "type",
        "reason",
    }
