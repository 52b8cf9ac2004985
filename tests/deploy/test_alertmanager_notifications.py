"""What the shipped receivers send, rendered by Debian's Alertmanager (PagerDuty and Slack).

The shipped config runs as it is, except that its secret files hold a local routing key and a
local URL, the PagerDuty events URL is that local URL too, and groups are sent after a second.
Alerts are posted to Alertmanager's API; what it sends is read from the local receiver.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .prometheus_stack import Daemon, WebhookSink, start_alertmanager
from .tools import ALERTMANAGER_CONFIG, load_yaml

WAIT_S = 30.0
INSTANCES = ("10.0.0.1:8000", "10.0.0.2:8000")


def local_receivers_config(url: str, workdir: Path) -> dict[str, Any]:
    """The shipped config with its secrets and PagerDuty's URL pointing at `url`."""
    key_file, url_file = workdir / "pagerduty-routing-key", workdir / "slack-webhook-url"
    key_file.write_text("local-routing-key")
    url_file.write_text(url)
    config = load_yaml(ALERTMANAGER_CONFIG)
    for receiver in config["receivers"]:
        for pagerduty in receiver.get("pagerduty_configs", []):
            pagerduty.update(routing_key_file=str(key_file), url=url)
        for slack in receiver.get("slack_configs", []):
            slack["api_url_file"] = str(url_file)
    config["route"].update(group_wait="1s", group_interval="1s")
    return config


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[Daemon, WebhookSink]]:
    sink = WebhookSink()
    with sink.serving() as url:
        daemon = start_alertmanager(local_receivers_config(url, tmp_path), tmp_path)
        try:
            yield daemon, sink
        finally:
            daemon.stop()


def post_alerts(alertmanager: Daemon, name: str, severity: str) -> None:
    """One alert `name` per instance of `INSTANCES`, each with its own summary."""
    alerts = [
        {
            "labels": {"alertname": name, "severity": severity, "job": "mlfactory", "instance": i},
            "annotations": {
                "summary": f"mlfactory server {i} is down",
                "description": f"Prometheus has not been able to scrape {i}.",
                "runbook_url": f"https://mlfactory.example/runbooks/#{name.lower()}",
            },
        }
        for i in INSTANCES
    ]
    response = httpx.post(f"{alertmanager.url}/api/v2/alerts", json=alerts, timeout=10.0)
    assert response.status_code == 200, response.text


def received_with_both(sink: WebhookSink, alertmanager: Daemon) -> dict[str, Any]:
    """The first message sent that is about both alerts (fails after WAIT_S)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for message in list(sink.received):
            if all(instance in str(message) for instance in INSTANCES):
                return message
        time.sleep(0.2)
    pytest.fail(f"nothing about both alerts: {sink.received}\n{alertmanager.output_tail()}")


def test_a_page_about_two_servers_has_a_summary_naming_both(
    alertmanager: tuple[Daemon, WebhookSink],
) -> None:
    daemon, sink = alertmanager
    post_alerts(daemon, "MlfactoryTargetDown", "critical")
    event = received_with_both(sink, daemon)
    assert event["routing_key"] == "local-routing-key"
    summary = event["payload"]["summary"]
    assert summary == (
        "MlfactoryTargetDown (mlfactory): 2 firing, 0 resolved, on 10.0.0.1:8000, 10.0.0.2:8000"
    )
    assert event["links"] == [
        {"href": "https://mlfactory.example/runbooks/#mlfactorytargetdown", "text": "runbook"}
    ]


def test_a_chat_message_about_two_alerts_gives_each_its_own_lines(
    alertmanager: tuple[Daemon, WebhookSink],
) -> None:
    daemon, sink = alertmanager
    post_alerts(daemon, "MlfactoryQueueSaturated", "warning")
    message = received_with_both(sink, daemon)
    attachment = message["attachments"][0]
    assert attachment["title"] == "[FIRING] MlfactoryQueueSaturated (mlfactory)"
    runbook = "Runbook: https://mlfactory.example/runbooks/#mlfactoryqueuesaturated"
    lines = attachment["text"].splitlines()
    assert sorted(lines) == sorted(
        [f"[firing] Prometheus has not been able to scrape {i}." for i in INSTANCES]
        + [runbook, runbook]
    )
