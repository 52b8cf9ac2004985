"""`mlfactory serve` for real: a bounded shutdown under a trickling client, and the access log.

Kubernetes sends SIGTERM, waits `terminationGracePeriodSeconds` (30 s by default), then kills.
A client that trickles its body one byte at a time never lets the request finish, so the server
must give up on it after `MLFACTORY_SHUTDOWN_TIMEOUT_S`, not wait for it.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import httpx

from .live_server import live_server
from .tiny_bundles import tiny_bundle

HEAD = (
    b"POST /v1/predict HTTP/1.1\r\nHost: test\r\n"
    b"Content-Type: multipart/form-data; boundary=xx\r\nContent-Length: 1000000\r\n\r\n"
    b'--xx\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
)
# The longest the client trickles, and the longest the test waits for the server to exit.
TRICKLE_S = 40.0
EXIT_WAIT_S = 15.0
ACCESS_LINE = '"GET /health HTTP/1.1" 200'


def trickle(url: str, stop: threading.Event) -> None:
    """Send a request head, then one byte of body every 0.2 s until `stop` or `TRICKLE_S`."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5.0) as client:
        client.sendall(HEAD)
        deadline = time.monotonic() + TRICKLE_S
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                client.sendall(b"a")
                time.sleep(0.2)
        except OSError:  # the server closed the connection: what the test waits for
            pass


def test_sigterm_exits_within_the_shutdown_timeout_despite_a_trickling_client(
    tmp_path: Path,
) -> None:
    bundle = tiny_bundle(tmp_path / "bundle", "image")
    stop = threading.Event()
    with live_server(bundle, tmp_path, shutdown_timeout_s="2") as server:
        assert httpx.get(f"{server.url}/health", timeout=10.0).status_code == 200
        sender = threading.Thread(target=trickle, args=(server.url, stop), daemon=True)
        sender.start()
        time.sleep(1.0)  # the request is in flight: its head is read, its body arriving
        assert server.process.poll() is None
        started = time.monotonic()
        server.process.terminate()
        try:
            code = server.process.wait(timeout=EXIT_WAIT_S)
        finally:
            stop.set()
            sender.join(timeout=10.0)
        took = time.monotonic() - started
        output = server.output.read_text()
    assert code in (0, -signal.SIGTERM), output  # uvicorn ends by raising the signal again
    assert took < EXIT_WAIT_S and sender.is_alive() is False, output
    # one line says the request was cancelled, with no traceback after it
    assert "Cancel 1 running task(s), timeout graceful shutdown exceeded" in output
    assert "Traceback" not in output and "CancelledError" not in output, output
    assert ACCESS_LINE in output  # access lines are on by default


def test_access_log_false_leaves_out_the_line_per_request(tmp_path: Path) -> None:
    bundle = tiny_bundle(tmp_path / "bundle", "image")
    with live_server(bundle, tmp_path, access_log="false") as server:
        for _ in range(3):
            assert httpx.get(f"{server.url}/health", timeout=10.0).status_code == 200
        assert httpx.get(f"{server.url}/v1/model", timeout=10.0).status_code == 200
    output = server.output.read_text()
    assert "Application startup complete" in output  # the server's own lines are still there
    assert ACCESS_LINE not in output and '"GET /v1/model' not in output, output
