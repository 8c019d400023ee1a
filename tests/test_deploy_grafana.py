"""deploy/grafana: the provisioned dashboard is a well-formed Grafana dashboard that shows
what operators need. Its queries are checked against promtool and the services' metrics in
test_prometheus_rules.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "riverbed.json"
GRID_WIDTH = 24  # Grafana's grid columns

#: what an operator looks for, and a metric that shows it
REQUIRED = {
    "throughput": "riverbed_consumed_total",
    "handler latency": "riverbed_handler_seconds_bucket",
    "lag": "riverbed_group_lag",
    "pending": "riverbed_group_pending",
    "oldest pending age": "riverbed_oldest_pending_age_seconds",
    "dead-letter depth": "riverbed_dead_letter_depth",
    "Redis memory": "riverbed_redis_used_memory_bytes",
    "delayed items waiting": "riverbed_delayed_waiting",
    "delayed items due": "riverbed_delayed_due",
    "promotion lag": "riverbed_promotion_lag_seconds",
    "promotions": "riverbed_promoted_total",
    "handler timeouts": "riverbed_handler_timeouts_total",
    "slow handlers": "riverbed_handlers_slow",
}
#: the topics shown in the "Time" row: what waits for later, and handlers that run too long
TIME_ROW = (
    "delayed items waiting",
    "delayed items due",
    "promotion lag",
    "promotions",
    "handler timeouts",
    "slow handlers",
)

#: the "Redis" row: Redis's health, from the services' own probe and the Redis exporter
#: (names as a live prometheus-redis-exporter exports them; test_prometheus_scrape.py checks
#: that every exporter query of the dashboard returns series from a real one)
REDIS_ROW = {
    "round trip, from the services": "riverbed_redis_ping_seconds_bucket",
    "command time in Redis": "redis_commands_duration_seconds_total",
    "memory used": "redis_memory_used_bytes",
    "memory limit": "redis_memory_max_bytes",
    "evictions": "redis_evicted_keys_total",
    "connected clients": "redis_connected_clients",
    "blocked clients": "redis_blocked_clients",
    "rejected connections": "redis_rejected_connections_total",
    "AOF write status": "redis_aof_last_write_status",
    "RDB save status": "redis_rdb_last_bgsave_status",
    "replication role": "redis_instance_info",
    "connected replicas": "redis_connected_slaves",
    "replica link": "redis_master_link_up",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def _queries(panel: dict[str, Any]) -> list[str]:
    return [t["expr"] for t in panel.get("targets", [])]


def test_dashboard_has_identity_and_a_schema_version(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "riverbed-overview"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36  # panels with datasource objects
    assert "id" not in dashboard or dashboard["id"] is None, "provisioned: Grafana assigns ids"


def test_panels_have_unique_ids_and_tile_the_grid_without_overlap(
    dashboard: dict[str, Any],
) -> None:
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["w"] > 0
        assert grid["h"] > 0
        assert grid["x"] + grid["w"] <= GRID_WIDTH, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_every_query_uses_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    [source] = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    expected = {"type": source["type"], "uid": source["uid"]}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == expected, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected
            assert target["expr"].strip()
        assert panel["fieldConfig"]["defaults"]["unit"], f"{panel['title']} has no unit"


def test_template_variables_used_are_defined(dashboard: dict[str, Any]) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    builtin = {"__rate_interval", "__interval", "__range"}
    for panel in dashboard["panels"]:
        for query in _queries(panel):
            used = set(re.findall(r"\$(\w+)", query))
            assert used <= defined | builtin, f"{panel['title']}: {used - defined - builtin}"


@pytest.mark.parametrize("topic", sorted(REQUIRED))
def test_dashboard_shows(topic: str, dashboard: dict[str, Any]) -> None:
    metric = REQUIRED[topic]
    showing = [p["title"] for p in dashboard["panels"] if any(metric in q for q in _queries(p))]
    assert showing, f"no panel shows {topic} ({metric})"


def _row_of(panel: dict[str, Any], panels: list[dict[str, Any]]) -> str | None:
    """Title of the row a panel sits under: the nearest row above it on the grid."""
    above = [p for p in panels if p["type"] == "row" and p["gridPos"]["y"] < panel["gridPos"]["y"]]
    return max(above, key=lambda p: p["gridPos"]["y"])["title"] if above else None


@pytest.mark.parametrize("topic", TIME_ROW)
def test_time_row_shows(topic: str, dashboard: dict[str, Any]) -> None:
    metric = REQUIRED[topic]
    panels = dashboard["panels"]
    rows = {_row_of(p, panels) for p in panels if any(metric in q for q in _queries(p))}
    assert "Time" in rows, f"{topic} ({metric}) is not in the Time row but in {rows}"


@pytest.mark.parametrize("topic", sorted(REDIS_ROW))
def test_redis_row_shows(topic: str, dashboard: dict[str, Any]) -> None:
    # the whole name: redis_connected_clients is not riverbed_redis_connected_clients
    metric = re.compile(rf"(?<![A-Za-z0-9_]){REDIS_ROW[topic]}(?![A-Za-z0-9_])")
    panels = dashboard["panels"]
    rows = {_row_of(p, panels) for p in panels if any(metric.search(q) for q in _queries(p))}
    assert "Redis" in rows, f"{topic} ({REDIS_ROW[topic]}) is not in the Redis row but in {rows}"


def test_dashboard_provider_serves_this_directory() -> None:
    [provider] = yaml.safe_load((GRAFANA / "provisioning/dashboards/riverbed.yml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert provider["allowUiUpdates"] is False, "the JSON in the repository is the truth"
