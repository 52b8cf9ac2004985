"""The Grafana dashboard: Grafana 10's schema, the panels the issue asks for, valid PromQL.

Grafana itself is not available offline. Every panel query is checked here by promtool's PromQL
parser, and run against a real Prometheus in test_prometheus_e2e.py.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .tools import concrete, dashboard, panel_queries, run_tool

GRAFANA_10_SCHEMA = 38  # the dashboard schemaVersion Grafana 10.0 writes
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Panel subjects the issue asks for, and a metric that shows each.
SUBJECTS = {
    "requests": "mlfactory_http_requests_total",
    "latency quantiles": "mlfactory_http_request_duration_seconds_bucket",
    "batch sizes": "mlfactory_batch_size_bucket",
    "queue depth": "mlfactory_queue_depth",
    "OOD rate": "mlfactory_ood_inputs_total",
    "drift p-values": "mlfactory_drift_p_value",
    "estimated accuracy": "mlfactory_accuracy_estimated",
    "live accuracy": "mlfactory_accuracy_live",
}


def test_the_dashboard_follows_grafana_10s_schema() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= GRAFANA_10_SCHEMA
    assert board["uid"] and board["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["datasource"] == DATASOURCE
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "table"}, panel["title"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["refId"], panel["title"]


def test_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_every_subject_the_issue_asks_for_has_a_panel() -> None:
    queries = " ".join(expr for _, expr in panel_queries())
    missing = [subject for subject, metric in SUBJECTS.items() if metric not in queries]
    assert not missing
    latency = [e for _, e in panel_queries() if "request_duration_seconds_bucket" in e]
    assert {"0.5", "0.9", "0.99"} <= {e.split("(")[1].split(",")[0] for e in latency}


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query (variables filled in) as a recording rule's expression."""
    rules = [
        {"record": f"dashboard:query:{index}", "expr": concrete(expr)}
        for index, (_, expr) in enumerate(panel_queries())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_tool("promtool", "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
