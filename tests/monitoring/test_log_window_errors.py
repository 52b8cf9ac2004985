"""A prediction log that cannot be read gives one line, never a traceback, a hang or a 500: a
database server that accepts connections and never answers, and malformed rows in a log that a
real server wrote while serving a real digits bundle."""

from __future__ import annotations

import contextlib
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mlfactory.cli import app
from mlfactory.errors import LogDatabaseError
from mlfactory.monitoring.log_window import read_window
from mlfactory.serving.app import create_app
from mlfactory.serving.settings import ServingSettings
from tests.monitoring.conftest import digit_images, png
from tests.test_cli import assert_one_line_error

runner = CliRunner()
# A generous bound: a hang is what is tested, not a timing (the connect timeout is 10 s).
HANG_S = 60
CORRUPT_ROW = 7


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts TCP connections and never answers (a firewall, a dead
    proxy); on exit it closes them all, which ends any client still waiting."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


def ends_within(seconds: float, call: Callable[[], Any]) -> BaseException | None:
    """Run `call` in a thread; the exception it raised (None if none). Fails the test when it
    has not ended after `seconds`."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting for a silent database after {seconds} s"
    return raised[0] if raised else None


def test_a_log_server_that_never_answers_is_one_line_not_a_hang() -> None:
    with silent_server() as port:
        url = f"postgresql+psycopg://mlf:secret@127.0.0.1:{port}/log"
        raised = ends_within(HANG_S, lambda: read_window(url, "digits", "1"))
    assert isinstance(raised, LogDatabaseError), raised
    assert "cannot read the prediction log" in str(raised)
    assert "\n" not in str(raised) and "secret" not in str(raised)


def test_monitor_on_a_log_server_that_never_answers_exits_2(monitored_digits: Any) -> None:
    bundle = str(monitored_digits.bundle.path)
    with silent_server() as port:
        # The URL's own connect timeout (the default, 10 s, is the test above's)
        url = f"postgresql+psycopg://mlf@127.0.0.1:{port}/log?connect_timeout=2"
        command = [sys.executable, "-m", "mlfactory.cli", "monitor", bundle, "--log", url]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"mlfactory monitor still waits for a silent database after {HANG_S} s")
    assert done.returncode == 2, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot read the prediction log")


@pytest.fixture(scope="module")
def served_log(monitored_digits: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prediction log of a server of the digits bundle that answered 20 real digits."""
    database = tmp_path_factory.mktemp("served") / "predictions.db"
    settings = ServingSettings(log_url=f"sqlite:///{database}")
    with TestClient(create_app(monitored_digits.bundle.path, settings)) as client:
        for start in range(0, 20, 10):
            images = digit_images(offset=400, per_class=2)[start : start + 10]
            files = [
                ("files", (f"{i}.png", png(image), "image/png"))
                for i, (image, _) in enumerate(images)
            ]
            assert client.post("/v1/predict", files=files).status_code == 200
    return database


def corrupt_copy(served_log: Path, folder: Path, column: str, value: str) -> Path:
    """A copy of the served log whose row `CORRUPT_ROW` holds `value` (SQL) in `column`."""
    copy = folder / "corrupt.db"
    shutil.copy(served_log, copy)
    with contextlib.closing(sqlite3.connect(copy)) as database, database:
        changed = database.execute(
            f"UPDATE predictions SET {column} = {value} WHERE id = ?", (CORRUPT_ROW,)
        ).rowcount
    assert changed == 1
    return copy


@pytest.mark.parametrize(
    ("column", "value", "fragment"),
    [
        ("probabilities", "'[1,2'", "its probabilities is not valid JSON"),
        ("probabilities", "'[0.5,0.5]'", "its probabilities is list, not an object"),
        ("probabilities", """'{"0": "high"}'""", "give label '0' \"high\", not a number"),
        ("input_summary", "'{bad'", "its input_summary is not valid JSON"),
        ("input_summary", "'null'", "its input_summary is null, not an object"),
        ("embedding_f16", "x'000102'", "its embedding_f16 is 3 bytes, not float16 values"),
        ("latency_ms", "'slow'", "its latency_ms is 'slow', not a number"),
    ],
)
def test_a_malformed_row_is_one_line_naming_its_id_and_column(
    served_log: Path, monitored_digits: Any, tmp_path: Path, column: str, value: str, fragment: str
) -> None:
    corrupt = corrupt_copy(served_log, tmp_path, column, value)
    result = runner.invoke(
        app, ["monitor", str(monitored_digits.bundle.path), "--log", str(corrupt)]
    )
    assert_one_line_error(result, f"row {CORRUPT_ROW} of the prediction log (digits ")
    assert fragment in result.output
    assert f"DELETE FROM predictions WHERE id = {CORRUPT_ROW}" in result.output


def test_the_servers_drift_check_of_a_malformed_row_is_a_503(
    served_log: Path, monitored_digits: Any, tmp_path: Path
) -> None:
    corrupt = corrupt_copy(served_log, tmp_path, "probabilities", "'[1,2'")
    settings = ServingSettings(log_url=f"sqlite:///{corrupt}")
    app_ = create_app(monitored_digits.bundle.path, settings)
    with TestClient(app_, raise_server_exceptions=False) as client:
        response = client.get("/v1/monitoring/drift")
    assert response.status_code == 503, response.text
    assert f"row {CORRUPT_ROW} of the prediction log" in response.json()["detail"]
