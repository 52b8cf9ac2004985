"""Load-test a running mlfactory server, local or deployed, with Locust.

Each simulated user posts real inputs to `POST /v1/predict`, as fast as the server answers
(`--wait` seconds between requests, default 0), and Locust reports requests per second,
latency percentiles and failures. A request fails unless it gets a 200 whose `predictions`
hold one answer per input sent. The inputs match the served model's modality, which the file
reads from `GET /v1/model`: files from a folder for image and audio bundles, lines of a text
file for text bundles. The load is bounded in time (`--run-time`) and in requests
(`--max-requests`, default 10,000): whichever comes first stops it.

    pip install ".[load]"
    locust -f deploy/locust/locustfile.py --host https://mlfactory-xyz.a.run.app \\
        --inputs ~/photos/new --headless --users 16 --spawn-rate 4 --run-time 2m

Without `--headless`, Locust serves its web UI on port 8089, on every interface unless
`--web-host 127.0.0.1`.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import gevent
import requests
from locust import HttpUser, between, constant, events, task
from locust.env import Environment

_lock = threading.Lock()
_sent = itertools.count(1)
_answered = [0]  # requests that got an answer (or failed): in flight no more
_inputs: dict[str, Any] = {}
QUIT_WAIT_S = 60.0  # the most the cap waits for the requests still in flight


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--inputs",
        required=True,
        help="a folder of image or audio files, or a text file of one text per line",
    )
    parser.add_argument("--per-request", type=int, default=1, help="inputs in each request")
    parser.add_argument(
        "--max-requests", type=int, default=10_000, help="stop the test after this many requests"
    )
    parser.add_argument("--wait", type=float, default=0.0, help="seconds between a user's requests")


def _read_inputs(path: Path, modality: str) -> list[Any]:
    """The inputs to cycle through: texts, or (file name, bytes) pairs."""
    if modality == "text":
        if not path.is_file():
            raise SystemExit(
                f"error: --inputs {path}: a text model needs a file of one text per line"
            )
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        found: list[Any] = [text for text in texts if text]
    else:
        if not path.is_dir():
            raise SystemExit(f"error: --inputs {path}: an {modality} model needs a folder of files")
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        found = [(p.name, p.read_bytes()) for p in files]
    if not found:
        raise SystemExit(f"error: --inputs {path}: no inputs in it")
    return found


@events.test_start.add_listener
def _load_inputs(environment: Environment, **_: Any) -> None:
    """Ask the server what it serves, then read the inputs that fit it (once per process)."""
    options = environment.parsed_options
    assert options is not None and environment.host
    modality = _served_modality(environment.host.rstrip("/"))
    _inputs["modality"] = modality
    _inputs["items"] = itertools.cycle(_read_inputs(Path(options.inputs), modality))
    _inputs["per_request"] = max(1, options.per_request)
    _inputs["max_requests"] = options.max_requests


def _served_modality(host: str) -> str:
    """The modality of the model `host` serves (`GET /v1/model`); one line and exit when the
    server cannot be reached or does not answer it."""
    url = f"{host}/v1/model"
    try:
        answer = requests.get(url, timeout=30.0)
    except requests.RequestException as exc:
        raise SystemExit(f"error: --host {host}: {url} cannot be reached: {exc}") from None
    if answer.status_code in (401, 403):
        raise SystemExit(
            f"error: --host {host}: {url} answers {answer.status_code}: the server (or a proxy "
            "in front of it) wants credentials that this locustfile does not send"
        )
    try:
        answer.raise_for_status()
        return str(answer.json()["modality"])
    except (requests.RequestException, ValueError, KeyError, TypeError):
        raise SystemExit(
            f"error: --host {host}: {url} answers {answer.status_code} without a model's "
            "description: is it an mlfactory server?"
        ) from None


class PredictUser(HttpUser):
    """One client posting to `/v1/predict` and checking every answer."""

    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        if options is not None and options.wait > 0:
            self.wait_time = between(0, 2 * options.wait)  # type: ignore[method-assign]

    @task
    def predict(self) -> None:
        with _lock:
            number = next(_sent)
            batch = [next(_inputs["items"]) for _ in range(_inputs["per_request"])]
        if number > _inputs["max_requests"]:
            if number == _inputs["max_requests"] + 1 and self.environment.runner is not None:
                # From a greenlet of its own: quitting stops every user's, this one's too.
                gevent.spawn(_quit_when_answered, self.environment.runner, number - 1)
            gevent.sleep(0.1)  # sends nothing more until the quit stops it
            return
        if _inputs["modality"] == "text":
            request: dict[str, Any] = {"json": {"texts": batch}}
        else:
            request = {"files": [("files", item) for item in batch]}
        try:
            self._post(batch, request)
        finally:
            _answered[0] += 1

    def _post(self, batch: list[Any], request: dict[str, Any]) -> None:
        with self.client.post("/v1/predict", catch_response=True, **request) as response:
            if response.status_code != 200:
                detail = response.text[:200]
                response.failure(f"HTTP {response.status_code}: {detail}")
                return
            predictions = response.json().get("predictions", [])
            if len(predictions) != len(batch):
                response.failure(f"{len(predictions)} predictions for {len(batch)} inputs")
            else:
                response.success()


def _quit_when_answered(runner: Any, sent: int) -> None:
    """Stop the test once the `sent` requests are answered: quitting kills requests in flight,
    which Locust would then not count."""
    deadline = time.monotonic() + QUIT_WAIT_S
    while _answered[0] < sent and time.monotonic() < deadline:
        gevent.sleep(0.05)
    runner.quit()
