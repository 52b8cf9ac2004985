"""The example Alertmanager configuration: valid for Debian's amtool 0.25, routing every alert.

Critical alerts page the on-call receiver, warnings go to the team's chat, info alerts (which
only hold others back) go nowhere (checked with
`amtool config routes test` for each alert of the shipped rules, with its own labels).
"""

from __future__ import annotations

import pytest

from .tools import ALERTMANAGER_CONFIG, alert_rules, load_yaml, run_tool

# info alerts only inhibit others (MlfactoryOodInCheckedWindow): a receiver that sends nothing.
RECEIVER_OF_SEVERITY = {"critical": "on-call", "warning": "team-chat", "info": "inhibit-only"}


def test_amtool_accepts_the_config() -> None:
    result = run_tool("amtool", "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_each_alert_reaches_the_receiver_of_its_severity(rule: dict[str, object]) -> None:
    labels = rule["labels"]
    assert isinstance(labels, dict)
    expected = RECEIVER_OF_SEVERITY[labels["severity"]]
    result = run_tool(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--verify.receivers={expected}",
        f"alertname={rule['alert']}",
        *(f"{key}={value}" for key, value in labels.items()),
        "job=mlfactory",
        "instance=10.0.0.1:8000",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == expected


def test_no_secret_is_written_in_the_config() -> None:
    receivers = load_yaml(ALERTMANAGER_CONFIG)["receivers"]
    for receiver in receivers:
        for pagerduty in receiver.get("pagerduty_configs", []):
            assert "routing_key" not in pagerduty and pagerduty["routing_key_file"]
        for slack in receiver.get("slack_configs", []):
            assert "api_url" not in slack and slack["api_url_file"]


def test_only_the_receiver_of_info_alerts_sends_nothing() -> None:
    receivers = load_yaml(ALERTMANAGER_CONFIG)["receivers"]
    silent = [receiver["name"] for receiver in receivers if set(receiver) == {"name"}]
    assert silent == ["inhibit-only"]
