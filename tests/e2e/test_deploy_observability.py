"""Prometheus config and alerts, Grafana provisioning and dashboard: valid, tested, consistent.

promtool checks the config, the rules and the rules' unit tests; every dashboard query is
checked as PromQL by turning it into a recording rule; every metric name in the dashboard and
the alerts must be one the service exports.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Counter, Gauge, Histogram
from ruamel.yaml import YAML

from service.observability import metrics
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy/prometheus"
GRAFANA = REPO / "deploy/grafana"
DASHBOARD = GRAFANA / "dashboards/graphql-service.json"
DATASOURCE = GRAFANA / "provisioning/datasources/prometheus.yml"
DASHBOARD_PROVIDER = GRAFANA / "provisioning/dashboards/graphql-service.yml"
PROMTOOL = "promtool"

ALERTS = {
    "GraphQLHighErrorRatio",
    "GraphQLHighP99Latency",
    "GraphQLNoLiveWorkers",
    "GraphQLFanoutLag",
    "GraphQLDroppedNotifications",
    "GraphQLPostgresPoolExhausted",
}
# Grafana's built-in variables, replaced by a plain duration before promtool sees a query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
METRIC_NAME = re.compile(r"\bgraphql_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text())


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def targets(board: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query target of every panel, rows' nested panels included."""
    found = []
    for panel in board["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                found.append((inner, target))
    return found


def exported_types() -> dict[str, str]:
    """Scraped family name -> type, for the metrics service/observability/metrics.py defines."""
    types = {}
    for value in vars(metrics).values():
        if isinstance(value, Counter | Gauge | Histogram):
            [family] = list(value.describe())
            name = family.name + "_total" if family.type == "counter" else family.name
            types[name] = family.type
    return types


# --- Prometheus -----------------------------------------------------------------------------


def test_promtool_checks_the_config_and_finds_the_rules(tmp_path: Path) -> None:
    # Run from elsewhere: rule_files must resolve relative to the config file itself.
    result = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in output
    assert f"SUCCESS: {len(ALERTS)} rules found" in output


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    result = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    result = promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    rules = load_yaml(PROMETHEUS / "alerts.yml")
    [group] = rules["groups"]
    assert group["name"] == "graphql-service"
    defined = {rule["alert"]: rule for rule in group["rules"]}
    assert set(defined) == ALERTS
    for rule in defined.values():
        assert rule["for"], rule["alert"]
        assert rule["labels"]["severity"] in {"page", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]

    unit = load_yaml(PROMETHEUS / "alerts_test.yml")
    assert unit["rule_files"] == ["alerts.yml"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in unit["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fires == ALERTS
    assert quiet == ALERTS


def test_prometheus_scrapes_the_metrics_endpoint() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == ["alerts.yml"]
    [job] = config["scrape_configs"]
    assert job["job_name"] == "graphql-service"
    assert job["metrics_path"] == "/metrics"
    [static] = job["static_configs"]
    assert static["targets"] == [f"app:{Settings().metrics_port}"]


# --- Grafana --------------------------------------------------------------------------------


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    board = dashboard()
    rules = []
    for panel, target in targets(board):
        expr = target["expr"]
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"panel {panel['title']!r} uses an unknown variable: {expr}"
        rules.append({"record": f"dashboard:panel{panel['id']}_{target['refId']}", "expr": expr})
    assert len(rules) >= 13
    rules_file = tmp_path / "dashboard_rules.yml"
    # JSON is YAML: no quoting surprises in the expressions.
    rules_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(rules_file), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_metric_names_are_exported_by_the_service() -> None:
    types = exported_types()
    assert set(types) == metrics.EXPORTED_NAMES
    histograms = {name for name, kind in types.items() if kind == "histogram"}

    def families(text: str) -> set[str]:
        found = set()
        for name in METRIC_NAME.findall(text):
            base = name
            for suffix in HISTOGRAM_SUFFIXES:
                if name.endswith(suffix) and name.removesuffix(suffix) in histograms:
                    base = name.removesuffix(suffix)
            assert base in metrics.EXPORTED_NAMES, f"unknown metric {name}"
            # A histogram is only queried through its _bucket, _sum or _count series.
            assert base not in histograms or base != name, f"bare histogram {name}"
            found.add(base)
        return found

    board_names = families(DASHBOARD.read_text())
    assert board_names == metrics.EXPORTED_NAMES, "every exported family has a panel"
    alert_names = families((PROMETHEUS / "alerts.yml").read_text())
    assert alert_names == {
        "graphql_requests_total",
        "graphql_request_duration_seconds",
        "graphql_workers_alive",
        "graphql_fanout_lag_seconds",
        "graphql_subscription_notifications_dropped_total",
        "graphql_db_pool_in_use",
        "graphql_db_pool_size",
    }
    assert families((PROMETHEUS / "alerts_test.yml").read_text()) <= metrics.EXPORTED_NAMES


def test_dashboard_uses_the_provisioned_datasource() -> None:
    provisioning = load_yaml(DATASOURCE)
    [source] = provisioning["datasources"]
    assert source["uid"] == "graphql-prometheus"
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    expected = {"type": "prometheus", "uid": source["uid"]}
    board = dashboard()
    for panel in board["panels"]:
        assert panel["datasource"] == expected, panel["title"]
    for panel, target in targets(board):
        assert target.get("datasource", expected) == expected, panel["title"]
    assert "${" not in DASHBOARD.read_text(), "datasource must be fixed, not a variable"


def test_dashboard_has_a_fixed_uid_and_a_sound_layout() -> None:
    board = dashboard()
    assert board["uid"] == "graphql-service"
    assert board["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & area, f"panel {panel['title']!r} overlaps another"
        cells |= area
        assert panel["targets"], panel["title"]


@pytest.mark.parametrize(
    ("title_part", "needle"),
    [
        ("Request rate", "sum by (operation_type) (rate(graphql_requests_total"),
        ("Error ratio", 'graphql_requests_total{status!="ok"}'),
        ("Latency", "histogram_quantile(0.99, sum by (le, operation_type)"),
        ("Latency", "histogram_quantile(0.95, sum by (le, operation_type)"),
        ("Latency", "histogram_quantile(0.5, sum by (le, operation_type)"),
        ("In-flight", "graphql_inflight_operations"),
        ("WebSocket", "sum by (subprotocol) (graphql_websocket_connections)"),
        ("WebSocket", "graphql_active_subscriptions"),
        ("Notifications", "graphql_subscription_notifications_sent_total"),
        ("Notifications", "graphql_subscription_notifications_dropped_total"),
        ("Fanout lag", "histogram_quantile(0.99, sum by (le) (rate(graphql_fanout_lag"),
        ("Fanout lag", "histogram_quantile(0.5, sum by (le) (rate(graphql_fanout_lag"),
        ("cache hit ratio", "graphql_document_cache_misses_total"),
        ("Postgres pool", "graphql_db_pool_in_use"),
        ("Postgres pool", "graphql_db_pool_size"),
        ("Postgres query", "histogram_quantile(0.99, sum by (le) (rate(graphql_db_query"),
        ("Workers alive", "graphql_workers_alive"),
    ],
)
def test_dashboard_has_the_panels(title_part: str, needle: str) -> None:
    exprs = [
        target["expr"]
        for panel, target in targets(dashboard())
        if title_part.lower() in panel["title"].lower()
    ]
    assert exprs, f"no panel titled like {title_part!r}"
    assert any(needle in expr for expr in exprs), exprs


def test_dashboard_provider_reads_the_mounted_directory() -> None:
    provisioning = load_yaml(DASHBOARD_PROVIDER)
    [provider] = provisioning["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
