"""The shipped Prometheus rules: valid for promtool 2.42, unit-tested, each alert complete.

`promtool check rules` and `promtool test rules` are Debian's (`prometheus`); the unit tests
themselves are in deploy/prometheus/tests/*.test.yml.
"""

from __future__ import annotations

import re

from .tools import RULE_TESTS, RULES, RUNBOOK_BASE, RUNBOOKS, alert_rules, load_yaml, run_tool

# What a rule may hold in Prometheus 2.42, less `keep_firing_for` (new in 2.42: older servers
# refuse it).
RULE_KEYS = {"alert", "record", "expr", "for", "labels", "annotations"}
GROUP_KEYS = {"name", "interval", "rules"}
# info: never notified, only inhibits others (deploy/alertmanager/alertmanager.yml).
SEVERITIES = {"critical", "warning", "info"}
# The alerts issue 12 asks for, by what they watch.
REQUIRED_ALERTS = {
    "MlfactoryTargetDown",  # service down
    "MlfactoryTargetAbsent",  # scrape absent
    "MlfactoryHighErrorRate",  # 5xx rate
    "MlfactoryHighLatency",  # p99 latency over the SLO
    "MlfactoryQueueSaturated",
    "MlfactoryPredictionLogWriteErrors",
    "MlfactoryDataDrift",
    "MlfactoryHighOodFraction",
    "MlfactoryAccuracyBelowTest",  # estimated accuracy well below the bundle's test accuracy
    "MlfactoryNoTraffic",
}


def test_promtool_accepts_the_rules() -> None:
    result = run_tool("promtool", "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    assert len(RULE_TESTS) == 2
    names = [path.name for path in RULE_TESTS]
    result = run_tool("promtool", "test", "rules", *names, cwd=RULE_TESTS[0].parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_every_alert_the_issue_asks_for_is_there() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_ALERTS, REQUIRED_ALERTS - set(names)


def test_rules_use_only_fields_prometheus_2_42_knows() -> None:
    for group in load_yaml(RULES)["groups"]:
        assert set(group) <= GROUP_KEYS, group["name"]
        for rule in group["rules"]:
            assert set(rule) <= RULE_KEYS, rule


def test_each_alert_has_for_a_severity_and_its_annotations() -> None:
    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: no `for:`"
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert all(str(text).strip() for text in annotations.values()), name


def runbook_sections() -> dict[str, str]:
    """The level-2 sections of docs/runbooks.md, by their anchor (mkdocs: the lowercased title)."""
    sections: dict[str, str] = {}
    current = None
    for line in RUNBOOKS.read_text().splitlines():
        if line.startswith("## "):
            current = line[3:].strip().lower()
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def test_each_runbook_url_points_at_a_runbook_section_that_says_what_to_do() -> None:
    sections = runbook_sections()
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_BASE + "#"), url
        anchor = url.removeprefix(RUNBOOK_BASE + "#")
        assert anchor == rule["alert"].lower(), url
        assert anchor in sections, f"docs/runbooks.md has no section for {rule['alert']}"
        text = sections[anchor]
        assert "**Check**" in text and "**Do**" in text, rule["alert"]


def test_each_alert_is_unit_tested_firing_and_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    cases = [case for path in RULE_TESTS for case in load_yaml(path)["tests"]]
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names <= fired, f"never shown firing: {names - fired}"
    assert names <= quiet, f"never shown quiet: {names - quiet}"


def test_recording_rules_follow_the_naming_convention() -> None:
    """level:metric:operations (https://prometheus.io/docs/practices/rules/)."""
    records = [
        rule["record"]
        for group in load_yaml(RULES)["groups"]
        for rule in group["rules"]
        if "record" in rule
    ]
    assert records
    for name in records:
        level, metric, operations = name.split(":")
        assert level in {"job", "instance"} and metric.startswith("mlfactory_"), name
        assert operations, name


def test_alerts_read_only_metrics_the_server_exports_or_rules_record() -> None:
    exported = _exported_metric_names()
    recorded = {
        rule["record"]
        for group in load_yaml(RULES)["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    for group in load_yaml(RULES)["groups"]:
        for rule in group["rules"]:
            for name in re.findall(r"[a-z_:]*mlfactory_[a-z0-9_:]+", rule["expr"]):
                assert name in exported or name in recorded, f"{name} in {rule['expr']}"


def _exported_metric_names() -> set[str]:
    """Every sample name /metrics can show, from the server's own metric definitions."""
    from mlfactory.serving.metrics import ServingMetrics

    names: set[str] = set()
    for family in ServingMetrics().registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names
