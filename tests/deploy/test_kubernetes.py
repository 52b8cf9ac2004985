"""The Kubernetes manifests under deploy/kubernetes, checked offline.

kubernetes-validate checks the Deployment and Service against Kubernetes' own schemas. It has
no schema for the Prometheus Operator's resources, so those are checked for what makes them
work: the PrometheusRule holds exactly the shipped rules (which promtool accepts), and the
ServiceMonitor selects the Service and names one of its ports.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from mlfactory.serving.settings import ServingSettings, env_name

from .tools import KUBERNETES, ROOT, RULES, load_yaml, run_tool

CORE = KUBERNETES / "mlfactory.yaml"
MONITORING = KUBERNETES / "monitoring.yaml"
PROMETHEUS_RULE = KUBERNETES / "prometheusrule.yaml"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(path: Path, kind: str) -> dict[str, Any]:
    [found] = [doc for doc in documents(path) if doc["kind"] == kind]
    return found


def test_deployment_and_service_match_kubernetes_schemas() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", str(CORE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == 2, result.stdout


def test_the_servers_settings_are_ones_it_reads_with_values_it_accepts() -> None:
    """The server ignores a variable it does not know: a misspelt name would do nothing."""
    [container] = by_kind(CORE, "Deployment")["spec"]["template"]["spec"]["containers"]
    names = [env["name"] for env in container["env"] if env["name"].startswith("MLFACTORY_")]
    known = {env_name(field.name) for field in fields(ServingSettings)}
    assert set(names) <= known, set(names) - known
    values = {env["name"]: env["value"] for env in container["env"] if "value" in env}
    settings = ServingSettings.from_env({k: v for k, v in values.items() if k in known})
    assert settings.monitor_level == 0.01 and settings.log_retention == "90d"


def test_the_prometheus_rule_is_the_shipped_rules_file() -> None:
    rule = by_kind(PROMETHEUS_RULE, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    stale = "deploy/kubernetes/prometheusrule.yaml is stale: bash scripts/render-prometheusrule.sh"
    assert rule["spec"] == load_yaml(RULES), stale


def test_promtool_accepts_the_prometheus_rules_spec(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yml"
    spec.write_text(yaml.safe_dump(by_kind(PROMETHEUS_RULE, "PrometheusRule")["spec"]))
    result = run_tool("promtool", "check", "rules", str(spec))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_render_script_reproduces_the_prometheus_rule(tmp_path: Path) -> None:
    rendered = tmp_path / "prometheusrule.yaml"
    script = ROOT / "scripts" / "render-prometheusrule.sh"
    result = subprocess.run(
        ["bash", str(script), str(rendered)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert rendered.read_text() == PROMETHEUS_RULE.read_text()


def test_the_service_monitor_scrapes_the_service_and_the_service_the_pods() -> None:
    monitor = by_kind(MONITORING, "ServiceMonitor")
    service = by_kind(CORE, "Service")
    deployment = by_kind(CORE, "Deployment")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    wanted = monitor["spec"]["selector"]["matchLabels"]
    assert wanted.items() <= service["metadata"]["labels"].items()
    ports = {port["name"] for port in service["spec"]["ports"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    container_ports = {port["name"] for port in container["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= container_ports
    # The scrape job is named after the Service; the alert rules select job=~"mlfactory.*".
    assert service["metadata"]["name"].startswith("mlfactory")
