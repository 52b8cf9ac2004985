"""The files under deploy/, and the real tools that check them (Debian's promtool and amtool).

A missing tool fails the test with the Debian package to install: these checks are part of the
suite, never skipped (`scripts/setup.sh` installs the packages when run as root).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "mlfactory-rules.yml"
# The unit tests of the rules: the service alerts, and the model-quality alerts.
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.test.yml"))
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARD = DEPLOY / "grafana" / "mlfactory-dashboard.json"
KUBERNETES = DEPLOY / "kubernetes"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://mlfactory.example/runbooks/"

# Where Debian installs each tool, and the package that has it.
TOOLS = {
    "promtool": ("/usr/bin/promtool", "prometheus"),
    "prometheus": ("/usr/bin/prometheus", "prometheus"),
    "amtool": ("/usr/bin/amtool", "prometheus-alertmanager"),
    "alertmanager": ("/usr/bin/prometheus-alertmanager", "prometheus-alertmanager"),
}


def tool(name: str) -> str:
    """The path of a Debian-packaged tool; fails the test naming the package when missing."""
    path, package = TOOLS[name]
    found = path if Path(path).is_file() else shutil.which(name)
    if not found:
        pytest.fail(
            f"{name} not found at {path}: install the Debian package '{package}' "
            f"(apt-get install {package}; scripts/setup.sh does it when run as root)"
        )
    return found


def run_tool(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool; its output is in the result (the caller asserts on the exit code)."""
    return subprocess.run(
        [tool(name), *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the shipped rules file."""
    groups = load_yaml(RULES)["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    """The shipped Grafana dashboard."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel of the dashboard."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def concrete(expr: str, rate_interval: str = "1m", job: str = "mlfactory.*") -> str:
    """A dashboard query with Grafana's variables filled in, as Grafana would send it."""
    filled = (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$__interval", rate_interval)
        .replace("$job", job)
        .replace("$instance", ".*")
    )
    assert "$" not in filled, f"a variable is left in {filled}"
    return filled
