"""End to end with real components: a trained digits bundle served by `mlfactory serve`, with its
background drift check, scraped by Debian's Prometheus evaluating the shipped rules, which sends
to Debian's Alertmanager running the shipped routes and inhibitions.

1. Real MNIST digits the model never saw: no alert fires, nothing reaches Alertmanager.
2. The same digits inverted (a real shift): the drift and OOD alerts fire; Alertmanager sends the
   OOD alert to the team's chat and holds back the drift alert it explains (inhibition).
   Back to real digits: every alert resolves, and the drift alert never reached the chat, not
   even while the OOD alert (3 minutes of traffic) had resolved and the drift verdict (the
   latest predictions) had not.
3. Every rule evaluated without error, and every Grafana panel query returns data.
4. The server is killed: the page for it reaches the on-call receiver.

The shipped rules run on a clock divided by 60 (prometheus_stack.TIME_SCALE): 15 minutes of
drift fire after 15 s. Bounded: about a minute, after the bundle is trained.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageOps

from mlfactory.serving.process import ServerProcess
from tests.conftest import write_digit_folder
from tests.monitoring.conftest import png
from tests.serving.live_server import live_server

from .prometheus_stack import (
    Daemon,
    PrometheusStack,
    prometheus_stack,
    scaled_duration,
    scaled_rules,
)
from .tools import RULES, concrete, load_yaml, panel_queries

UNSEEN_OFFSET = 200  # MNIST digits from the 200th of each class on: neither trained on nor profiled
UNSEEN_PER_CLASS = 30
IMAGES_PER_REQUEST = 4
PAUSE_S = 0.05  # between requests: steady traffic without saturating two cores
WAIT_S = 60.0  # the most any state is waited for
PHASE_1_S = 20.0  # in-distribution traffic watched by Prometheus (20 minutes of the shipped clock)
# The background drift check: every 2 s, on the latest 200 predictions (a minute of traffic or so
# on the shipped clock, instead of the defaults' 1,000).
MONITORING = {"monitor_every": "2s", "monitor_window": "200"}
SHIFT_ALERTS = {"MlfactoryDataDrift", "MlfactoryHighOodFraction"}


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


@dataclass
class DigitPools:
    """Real MNIST digits the model never saw, and the same digits inverted (PNG bytes)."""

    unseen: list[bytes]
    inverted: list[bytes]


@pytest.fixture(scope="module")
def digit_pools(tmp_path_factory: pytest.TempPathFactory) -> DigitPools:
    folder = write_digit_folder(
        tmp_path_factory.mktemp("unseen"), UNSEEN_PER_CLASS, offset=UNSEEN_OFFSET
    )
    paths = sorted(folder.rglob("*.png"))
    # Shuffled: the traffic cycles through the pool, and a window of one class at a time
    # would be a real (label) shift.
    random.Random(0).shuffle(paths)
    images = [Image.open(path).convert("L") for path in paths]
    return DigitPools(
        [path.read_bytes() for path in paths], [png(ImageOps.invert(i)) for i in images]
    )


def host_port(server: ServerProcess) -> str:
    return server.url.removeprefix("http://")


def assert_quiet(stack: PrometheusStack, started: float, ended: float) -> None:
    """No alert fired between `started` and `ended`, and none reached Alertmanager.

    Nothing is pending now either, except perhaps the drift alert: a window of in-distribution
    predictions is found drifting at the test level (5 %), and the rule's `for:` is what keeps
    such a window from firing.
    """
    prometheus = stack.prometheus
    assert prometheus.query('up{job="mlfactory"} == 1')
    assert prometheus.query("mlfactory_monitoring_window_predictions > 0"), "no drift check ran"
    assert prometheus.query("mlfactory_ood_fraction < 0.1")
    fired = prometheus.query_range('ALERTS{alertstate="firing"}', started, ended)
    assert not fired, [series["metric"] for series in fired]
    assert set(prometheus.alerts("pending", "firing")) <= {"MlfactoryDataDrift"}
    assert stack.alertmanager.get("/api/v2/alerts") == []
    assert stack.notifications.received == []


def drift_held_back_by_ood(stack: PrometheusStack) -> bool:
    """Alertmanager holds the drift alert back because the OOD alert explains it (inhibition)."""
    states = {
        alert["labels"]["alertname"]: alert["status"]
        for alert in stack.alertmanager.get("/api/v2/alerts")
    }
    drift = states.get("MlfactoryDataDrift", {})
    return (
        states.get("MlfactoryHighOodFraction", {}).get("state") == "active"
        and drift.get("state") == "suppressed"
        and bool(drift.get("inhibitedBy"))
    )


def assert_rules_and_panels_run(prometheus: Daemon, started: float, ended: float) -> None:
    """Every shipped rule evaluates without error; every dashboard query returns data."""
    rules = [r for g in prometheus.get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
    assert len(rules) == sum(len(group["rules"]) for group in load_yaml(RULES)["groups"])
    unhealthy = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not unhealthy
    for title, expr in panel_queries():
        query = concrete(expr, rate_interval="4s", job="mlfactory")
        assert prometheus.query_range(query, started, ended), f"panel {title!r}: no data: {query}"


@pytest.fixture
def served_bundle(monitored_digits: Any) -> Path:
    """The bundle the end-to-end test serves: trained digits with their reference profile."""
    path: Path = monitored_digits.bundle.path
    return path


def test_quiet_then_alerted_on_a_shift_then_paged_for_a_dead_server(
    served_bundle: Path, digit_pools: DigitPools, tmp_path: Path
) -> None:
    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    with (
        live_server(served_bundle, tmp_path, log_url=log_url, **MONITORING) as server,
        prometheus_stack([host_port(server)], tmp_path) as stack,
    ):
        prometheus = stack.prometheus
        with sending(server.url, digit_pools.unseen) as traffic:
            wait_for(
                "the server's predictions in Prometheus",
                lambda: prometheus.query("job:mlfactory_predictions:rate10m > 0"),
                stack,
            )
            started = time.time()
            time.sleep(PHASE_1_S)
            assert_quiet(stack, started, time.time())

            traffic.images = digit_pools.inverted
            wait_for(
                "the drift and OOD alerts to fire",
                lambda: set(prometheus.alerts("firing")) >= SHIFT_ALERTS,
                stack,
            )
            wait_for(
                "the OOD alert in the team's chat, the drift alert held back",
                lambda: (
                    "MlfactoryHighOodFraction" in stack.notifications.alertnames("team-chat")
                    and drift_held_back_by_ood(stack)
                ),
                stack,
            )
            traffic.images = digit_pools.unseen
            wait_for(
                "the shift alerts to resolve",
                lambda: not set(prometheus.alerts("firing")) & SHIFT_ALERTS,
                stack,
            )
            time.sleep(3.0)  # Alertmanager's group interval, scaled: what it would still send
            ended = time.time()
        assert "MlfactoryDataDrift" not in stack.notifications.alertnames("team-chat")
        assert_rules_and_panels_run(prometheus, started, ended)

        server.kill()  # a critical alert goes all the way: Prometheus -> Alertmanager -> on-call
        wait_for(
            "MlfactoryTargetDown to reach the on-call receiver",
            lambda: "MlfactoryTargetDown" in stack.notifications.alertnames("on-call"),
            stack,
        )
        assert "MlfactoryTargetDown" not in stack.notifications.alertnames("team-chat")


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
