"""End to end with real components: a trained digits bundle served by `mlfactory serve`, scraped
by Debian's Prometheus evaluating the shipped rules, which sends to Debian's Alertmanager running
the shipped routes.

Real MNIST digits the model never saw are sent to the server while Prometheus watches; no alert
may fire or even be pending, and nothing may reach Alertmanager. Every rule evaluates without
error and every Grafana panel query runs against this Prometheus. The shipped rules run on a
clock divided by 60 (prometheus_stack.TIME_SCALE). Bounded: about a minute after training.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlfactory.serving.process import ServerProcess
from mlfactory.training.train import TrainResult
from tests.conftest import write_digit_folder
from tests.serving.live_server import live_server

from .prometheus_stack import PrometheusStack, prometheus_stack, scaled_duration, scaled_rules
from .tools import RULES, concrete, load_yaml, panel_queries

UNSEEN_OFFSET = 200  # MNIST digits from the 200th of each class on: not trained on
UNSEEN_PER_CLASS = 10
IMAGES_PER_REQUEST = 4
PAUSE_S = 0.05  # between requests: steady traffic without saturating two cores
WAIT_S = 40.0  # the most any state is waited for
PHASE_1_S = 20.0  # in-distribution traffic watched by Prometheus (20 minutes of the shipped clock)
# Series that exist only once something happened: a drift check, a firing alert.
EMPTY_WITHOUT_EVENTS = ("mlfactory_drift_p_value", "ALERTS{")


@dataclass
class Traffic:
    """Requests of real images sent to a server from a thread, at a steady pace.

    Assign `images` to change what is sent from the next request on.
    """

    url: str
    images: list[bytes]
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            while not self.stopped.is_set():
                images = self.images
                chosen = [images[(self.sent + i) % len(images)] for i in range(IMAGES_PER_REQUEST)]
                files = [("files", (f"{i}.png", raw, "image/png")) for i, raw in enumerate(chosen)]
                response = client.post("/v1/predict", files=files)
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text}")
                self.sent += IMAGES_PER_REQUEST
                self.stopped.wait(PAUSE_S)


@contextmanager
def sending(url: str, images: list[bytes]) -> Iterator[Traffic]:
    """Send `images` to the server at `url` until the block ends; no request may fail."""
    traffic = Traffic(url, images)
    thread = threading.Thread(target=traffic.run, daemon=True)
    thread.start()
    try:
        yield traffic
    finally:
        traffic.stopped.set()
        thread.join(timeout=60)
    assert not traffic.failures, traffic.failures[:3]


def wait_for(what: str, condition: Any, stack: PrometheusStack) -> None:
    """Poll `condition()` until it is true; fails with the daemons' output after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    pytest.fail(
        f"waited {WAIT_S:.0f} s for {what}\nprometheus:\n{stack.prometheus.output_tail()}"
        f"\nalerts: {stack.prometheus.alerts('pending', 'firing')}"
    )


@pytest.fixture(scope="module")
def unseen_digits(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    folder = write_digit_folder(
        tmp_path_factory.mktemp("unseen"), UNSEEN_PER_CLASS, offset=UNSEEN_OFFSET
    )
    return [path.read_bytes() for path in sorted(folder.rglob("*.png"))]


def host_port(server: ServerProcess) -> str:
    return server.url.removeprefix("http://")


def rule_count() -> int:
    return sum(len(group["rules"]) for group in load_yaml(RULES)["groups"])


def test_in_distribution_traffic_raises_no_alert_and_every_panel_query_runs(
    trained_digits: TrainResult,
    unseen_digits: list[bytes],
    tmp_path: Path,
) -> None:
    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    with (
        live_server(trained_digits.bundle.path, tmp_path, log_url=log_url) as server,
        prometheus_stack([host_port(server)], tmp_path) as stack,
        sending(server.url, unseen_digits) as traffic,
    ):
        prometheus = stack.prometheus
        started = time.time()
        wait_for(
            "the server's predictions in Prometheus",
            lambda: prometheus.query("job:mlfactory_predictions:rate10m > 0"),
            stack,
        )
        time.sleep(PHASE_1_S)
        ended = time.time()

        assert prometheus.query('up{job="mlfactory"} == 1')
        fired = prometheus.query_range('ALERTS{alertstate="firing"}', started, ended)
        assert not fired, [series["metric"] for series in fired]
        assert prometheus.alerts("pending", "firing") == {}
        assert stack.alertmanager.get("/api/v2/alerts") == []
        assert stack.notifications.received == []

        rules = [r for g in prometheus.get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        assert len(rules) == rule_count()
        unhealthy = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
        assert not unhealthy

        for title, expr in panel_queries():
            query = concrete(expr, rate_interval="4s", job="mlfactory")
            result = prometheus.query_range(query, started, ended)
            if not any(name in expr for name in EMPTY_WITHOUT_EVENTS):
                assert result, f"panel {title!r}: no data for {query}"
        assert traffic.sent > 0


def test_the_shipped_rules_run_on_a_clock_divided_by_60() -> None:
    scaled = scaled_rules(load_yaml(RULES))
    rules = {r.get("alert") or r["record"]: r for g in scaled["groups"] for r in g["rules"]}
    assert rules["MlfactoryDataDrift"]["for"] == "15s"
    assert "[10s]" in rules["job:mlfactory_predictions:rate10m"]["expr"]
    assert scaled_duration("30s") == "500ms"
    shipped = {
        r.get("alert") or r["record"]: r for g in load_yaml(RULES)["groups"] for r in g["rules"]
    }
    for name, rule in rules.items():  # nothing else changes
        assert {**rule, "expr": "", "for": ""} == {**shipped[name], "expr": "", "for": ""}
