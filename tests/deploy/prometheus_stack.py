"""Debian's Prometheus and Alertmanager as child processes on free loopback ports, for tests.

`prometheus_stack` starts an Alertmanager (the shipped routes and inhibition rules, receivers
replaced by a webhook on 127.0.0.1 that records what it is sent) and a Prometheus that scrapes
the given targets every second and, from their first scrape on, evaluates the shipped rules
every second. The shipped rules are loaded with every duration divided by `TIME_SCALE` (a minute
becomes a second): the same expressions, labels and annotations, on a clock that fits a test.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

from mlfactory.serving.process import HOST, free_port

from .tools import ALERTMANAGER_CONFIG, RULES, load_yaml, tool

TIME_SCALE = 60  # shipped durations are divided by this: 15m -> 15s
READY_TIMEOUT_S = 30.0
DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
RANGE = re.compile(r"\[(\d+(?:ms|s|m|h|d))\]")
UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def scaled_duration(duration: str, scale: int = TIME_SCALE) -> str:
    """A Prometheus duration divided by `scale`, e.g. `"15m"` -> `"15s"`, `"5m"` -> `"5s"`."""
    match = DURATION.match(duration)
    assert match, f"not a simple Prometheus duration: {duration}"
    ms = int(match.group(1)) * UNIT_MS[match.group(2)] // scale
    assert ms > 0, f"{duration} / {scale} is shorter than a millisecond"
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def scaled_rules(rules: dict[str, Any], scale: int = TIME_SCALE) -> dict[str, Any]:
    """The rules with every `for:` and every range selector (`[10m]`) divided by `scale`."""

    def scale_ranges(expr: str) -> str:
        return RANGE.sub(lambda m: f"[{scaled_duration(m.group(1), scale)}]", expr)

    groups = []
    for group in rules["groups"]:
        scaled = []
        for rule in group["rules"]:
            rule = {**rule, "expr": scale_ranges(rule["expr"])}
            if "for" in rule:
                rule["for"] = scaled_duration(rule["for"], scale)
            scaled.append(rule)
        groups.append({**group, "rules": scaled})
    return {**rules, "groups": groups}


@dataclass
class WebhookSink:
    """An HTTP server on 127.0.0.1 that keeps the JSON bodies posted to it (Alertmanager's)."""

    received: list[dict[str, Any]] = field(default_factory=list)

    @contextmanager
    def serving(self) -> Iterator[str]:
        """Serve until the block ends; yields the URL to post to."""
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output to what fails

        server = ThreadingHTTPServer((HOST, 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://{HOST}:{server.server_address[1]}/alerts"
        finally:
            server.shutdown()
            server.server_close()
            thread.join()

    def alertnames(self, receiver: str) -> set[str]:
        """The names of the firing alerts that reached `receiver` so far."""
        return {
            alert["labels"]["alertname"]
            for message in list(self.received)
            if message["receiver"] == receiver
            for alert in message["alerts"]
            if alert["status"] == "firing"
        }


@dataclass
class Daemon:
    """A running Prometheus or Alertmanager: its URL, process and output file."""

    url: str
    process: subprocess.Popen[bytes]
    output: Path

    @property
    def port(self) -> int:
        """The loopback port it listens on."""
        return int(self.url.rsplit(":", 1)[1])

    def get(self, path: str, **params: str) -> Any:
        """GET an API path; the parsed JSON body (fails the test on an HTTP error)."""
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10.0)
        assert response.status_code == 200, f"GET {path} {params}: {response.text}"
        return response.json()

    def query(self, expr: str) -> list[dict[str, Any]]:
        """A PromQL instant query's result (Prometheus only); fails the test on an error."""
        body = self.get("/api/v1/query", query=expr)
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        """A PromQL range query at 1 s steps (Prometheus only); fails the test on an error."""
        body = self.get("/api/v1/query_range", query=expr, start=str(start), end=str(end), step="1")
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alerts(self, *states: str) -> dict[str, str]:
        """Prometheus's active alerts in `states` (pending, firing): name -> state."""
        listed = self.get("/api/v1/alerts")["data"]["alerts"]
        return {a["labels"]["alertname"]: a["state"] for a in listed if a["state"] in states}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)

    def output_tail(self, lines: int = 20) -> str:
        return "\n".join(self.output.read_text(errors="replace").splitlines()[-lines:])


def start_daemon(command: Sequence[str], url: str, ready: str, output: Path) -> Daemon:
    """Start `command` and wait until `url + ready` answers 200 (fails the test otherwise)."""
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    daemon = Daemon(url, process, output)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}{ready}", timeout=2.0).status_code == 200:
                return daemon
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    daemon.stop()
    raise AssertionError(f"{command[0]} did not become ready:\n{daemon.output_tail()}")


def alertmanager_config(webhook: str) -> dict[str, Any]:
    """The shipped Alertmanager config with every receiver a webhook and short group waits."""
    config = load_yaml(ALERTMANAGER_CONFIG)
    config["receivers"] = [
        {"name": receiver["name"], "webhook_configs": [{"url": webhook, "send_resolved": True}]}
        for receiver in config["receivers"]
    ]
    config["route"].update(group_wait="1s", group_interval="1s")
    return config


def prometheus_config(rules: Path, targets: Sequence[str], alertmanager_port: int) -> Any:
    """Scrape `targets` as job `mlfactory` and evaluate `rules` every second."""
    every_second = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    alertmanager = {"static_configs": [{"targets": [f"{HOST}:{alertmanager_port}"]}]}
    return {
        "global": every_second,
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [alertmanager]},
        "scrape_configs": [{"job_name": "mlfactory", "static_configs": [{"targets": targets}]}],
    }


def start_alertmanager(config: dict[str, Any], workdir: Path) -> Daemon:
    """Debian's Alertmanager running `config` on a free loopback port (the caller stops it)."""
    config_path = workdir / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    return start_daemon(
        [
            tool("alertmanager"),
            f"--config.file={config_path}",
            f"--storage.path={workdir / 'alertmanager-data'}",
            f"--web.listen-address={HOST}:{port}",
            "--cluster.listen-address=",  # no gossip port: one instance, loopback only
        ],
        f"http://{HOST}:{port}",
        "/-/ready",
        workdir / "alertmanager.log",
    )


@dataclass
class PrometheusStack:
    """A running Prometheus, its Alertmanager, and what the Alertmanager sent."""

    prometheus: Daemon
    alertmanager: Daemon
    notifications: WebhookSink
    rules: Path


@contextmanager
def prometheus_stack(targets: Sequence[str], workdir: Path) -> Iterator[PrometheusStack]:
    """Alertmanager and Prometheus scraping `targets` (job `mlfactory`), stopped on exit.

    Args:
        targets: `host:port` of the servers to scrape.
        workdir: where configs, data and the daemons' output go.
    """
    sink = WebhookSink()
    with ExitStack() as stack:
        webhook = stack.enter_context(sink.serving())
        alertmanager = start_alertmanager(alertmanager_config(webhook), workdir)
        stack.callback(alertmanager.stop)
        rules = workdir / "mlfactory-rules.yml"
        rules.write_text("groups: []\n")  # the shipped rules come once the targets are scraped
        prom_config = workdir / "prometheus.yml"
        prom_config.write_text(yaml.safe_dump(prometheus_config(rules, targets, alertmanager.port)))
        prom_port = free_port()
        prometheus = start_daemon(
            [
                tool("prometheus"),
                f"--config.file={prom_config}",
                f"--storage.tsdb.path={workdir / 'prometheus-data'}",
                f"--web.listen-address={HOST}:{prom_port}",
                # Targets start being scraped within a second, not the default 5 s (which the
                # scaled MlfactoryTargetAbsent, 5 s, would see as the target missing).
                "--scrape.discovery-reload-interval=1s",
            ],
            f"http://{HOST}:{prom_port}",
            "/-/ready",
            workdir / "prometheus.log",
        )
        stack.callback(prometheus.stop)
        load_rules_once_scraped(prometheus, rules, len(targets))
        yield PrometheusStack(prometheus, alertmanager, sink, rules)


def load_rules_once_scraped(prometheus: Daemon, rules: Path, targets: int) -> None:
    """Write the scaled shipped rules and reload Prometheus once every target was scraped.

    MlfactoryTargetAbsent waits 5 minutes for a first scrape; scaled, 5 s. Prometheus's first
    scrape may come later than that on a busy machine, and a test must not read that as an
    outage: the rules start once the targets are there, as they would minutes into real life.
    """
    deadline = time.monotonic() + READY_TIMEOUT_S
    while len(prometheus.query('up{job="mlfactory"} == 1')) < targets:
        assert time.monotonic() < deadline, f"targets not scraped:\n{prometheus.output_tail()}"
        time.sleep(0.2)
    shipped = scaled_rules(load_yaml(RULES))
    rules.write_text(yaml.safe_dump(shipped, sort_keys=False))
    prometheus.process.send_signal(signal.SIGHUP)  # reloads the config and its rule files
    expected = sum(len(group["rules"]) for group in shipped["groups"])
    while True:
        groups = prometheus.get("/api/v1/rules")["data"]["groups"]
        if sum(len(group["rules"]) for group in groups) == expected:
            return
        assert time.monotonic() < deadline, f"rules not loaded:\n{prometheus.output_tail()}"
        time.sleep(0.2)
