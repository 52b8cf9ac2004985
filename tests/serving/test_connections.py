"""Connection limits and timeouts of a real `mlfactory serve` process, probed over raw sockets.

One server with short timeouts (1 s) and a small connection limit serves every test. Each test
opens a bounded number of loopback sockets, closes every one of them, and runs for seconds:
slow request heads (slowloris), an idle flood past the connection limit, an endless header, a
body that stops arriving, idle keep-alive connections and a client hanging up mid-upload.
"""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from .live_server import LiveServer, free_port, live_server, server_env
from .tiny_bundles import tiny_bundle

MAX_CONNECTIONS = 32
LIMITS = {
    "header_timeout_s": "1",
    "body_timeout_s": "1",
    "keep_alive_timeout_s": "1",
    "max_header_bytes": "8192",
    "max_connections": str(MAX_CONNECTIONS),
}
SLOW_CLIENTS = 24
FLOOD = 200
READ_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("connections")
    bundle = tiny_bundle(workdir / "bundle", "image")
    with live_server(bundle, workdir, **LIMITS) as running:
        yield running


def address(server: LiveServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


@contextmanager
def connection(server: LiveServer) -> Iterator[socket.socket]:
    sock = socket.create_connection(address(server), timeout=READ_TIMEOUT_S)
    try:
        yield sock
    finally:
        sock.close()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the read times out)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def is_closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False  # open, nothing to read
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


def healthy(server: LiveServer) -> bool:
    return httpx.get(f"{server.url}/health", timeout=5.0).status_code == 200


def open_files(server: LiveServer) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def guard_events(server: LiveServer, event: str) -> float:
    """The server's `mlfactory_connection_guard_events_total` of one event."""
    text = httpx.get(f"{server.url}/metrics", timeout=5.0).text
    name = f'mlfactory_connection_guard_events_total{{event="{event}"}}'
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_slow_request_heads_are_cut_off_while_health_answers(server: LiveServer) -> None:
    before = guard_events(server, "head_timeout")
    with ExitStack() as stack:
        slow = [stack.enter_context(connection(server)) for _ in range(SLOW_CLIENTS)]
        for sock in slow:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for _ in range(3):  # one more header byte every 0.2 s: never a whole head
            time.sleep(0.2)
            for sock in slow:
                sock.sendall(b"X")
            assert healthy(server)
        answers = [read_until_closed(sock) for sock in slow]
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers[0]
    assert b"request head not received within 1 s" in answers[0]
    assert guard_events(server, "head_timeout") - before == SLOW_CLIENTS


def test_idle_connections_are_closed_after_the_header_timeout(server: LiveServer) -> None:
    with connection(server) as idle:
        started = time.monotonic()
        assert read_until_closed(idle) == b""  # closed without an answer: nothing was asked
        assert time.monotonic() - started < READ_TIMEOUT_S


def test_an_idle_flood_past_the_limit_never_locks_out_health(server: LiveServer) -> None:
    if not Path(f"/proc/{server.process.pid}/fd").is_dir():
        pytest.skip("needs /proc to count the server's open files")
    before, closed_before = open_files(server), guard_events(server, "idle_closed")
    with ExitStack() as stack:
        flood = [stack.enter_context(connection(server)) for _ in range(FLOOD)]
        assert healthy(server)  # at once, not after the flood's header timeout
        during = open_files(server)
        closed = sum(is_closed_by_server(sock) for sock in flood)
        assert healthy(server)
    assert during <= before + MAX_CONNECTIONS + 2
    assert closed >= FLOOD - MAX_CONNECTIONS
    assert 1 <= guard_events(server, "idle_closed") - closed_before <= FLOOD
    assert "idle connection closed to stay within MLFACTORY_MAX_CONNECTIONS" in (
        server.output.read_text()
    )


def test_an_endless_header_is_refused_at_the_size_limit(server: LiveServer) -> None:
    before = guard_events(server, "head_too_large")
    with connection(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: ")
        try:
            for _ in range(64):  # up to 1 MiB, never a line end
                sock.sendall(b"a" * 16384)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server once over the limit
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert guard_events(server, "head_too_large") - before == 1
    with connection(server) as sock:  # a large but allowed head is served
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: " + b"a" * 4000)
        sock.sendall(b"\r\nConnection: close\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200 ")


def test_a_large_head_that_arrives_in_one_read_is_refused(server: LiveServer) -> None:
    large = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: " + b"a" * 20000 + b"\r\n\r\n"
    small = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for sent in (large, small + large):  # alone, and behind a request on the same connection
        before = guard_events(server, "head_too_large")
        with connection(server) as sock:
            sock.sendall(sent)
            answer = read_until_closed(sock)
        if sent.startswith(small):
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
            answer = answer[answer.index(b"HTTP/1.1 ", 1) :]
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b'{"detail": "request head too large: over 8192 bytes of headers"}' in answer
        assert guard_events(server, "head_too_large") - before == 1
    assert healthy(server)


def test_an_answered_upload_gets_the_keep_alive_timeout_to_finish(server: LiveServer) -> None:
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: %d\r\n\r\n"
    )
    with connection(server) as sock:  # declares more than the limit: answered before the body
        sock.sendall(head % 10**12 + b"--x\r\n")
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        sock.sendall(b"a" * 16)  # more of the body, then silence
        started = time.monotonic()
        assert read_until_closed(sock).find(b"HTTP/1.1") < 0  # closed, nothing more said
        assert time.monotonic() - started < READ_TIMEOUT_S - 1
    with connection(server) as sock:  # a client that sends what it declared keeps its connection
        body = b"--x\r\n" + b"a" * 300
        sock.sendall(head % len(body))
        time.sleep(0.2)
        sock.sendall(body)
        answer = sock.recv(65536)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer += read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    assert answer.count(b"HTTP/1.1 200 ") == 1, answer


def test_pipelined_requests_are_answered_in_order_and_only_the_last_body_is_drained(
    server: LiveServer,
) -> None:
    health = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    too_large = (
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: %d\r\n\r\n--x\r\n"
        % 10
        ** 12
    )
    with connection(server) as sock:  # a complete request, then one answered before its body
        sock.sendall(health + too_large)
        started = time.monotonic()
        answer = read_until_closed(sock)
        assert time.monotonic() - started < READ_TIMEOUT_S - 1  # closed after the drain
    assert answer.count(b"HTTP/1.1 ") == 2, answer
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.index(b"HTTP/1.1 413 ") > answer.index(b'"status"'), answer
    body = b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
    body += b"not an image\r\n--x--\r\n"
    upload = (
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with connection(server) as sock:  # an upload whose body arrives after the answer before it
        sock.sendall(health + upload)
        for start in range(0, len(body), len(body) // 3 + 1):  # over longer than the timeouts
            time.sleep(0.45)
            sock.sendall(body[start : start + len(body) // 3 + 1])
        answer = read_until_closed(sock)
    assert answer.count(b"HTTP/1.1 ") == 2, answer
    assert b"not an image" in answer, answer  # answered, not cut off as an unread body
    with connection(server) as sock:  # complete pipelined requests: all answered, none drained
        sock.sendall(health * 2 + health.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        answer = read_until_closed(sock)
    assert answer.count(b"HTTP/1.1 200 ") == 3, answer


def test_a_malformed_request_is_a_json_400(server: LiveServer) -> None:
    with connection(server) as sock:
        sock.sendall(b"GARBAGE\r\n\r\n")
        answer = read_until_closed(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"content-type: application/json" in head.lower()
    assert re.search(rb"(?im)^x-request-id: [0-9a-f]{32}\r$", head)
    assert json.loads(body)["detail"].startswith("malformed HTTP request")


def test_a_malformed_chunk_is_counted_as_a_400_not_a_499(server: LiveServer) -> None:
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: bad-chunk-1\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with connection(server) as sock:
        sock.sendall(head + b"5\r\n--x\r\n\r\n")
        time.sleep(0.2)  # the app is reading the body
        sock.sendall(b"zz\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"x-request-id: bad-chunk-1" in answer.lower()
    deadline, metrics = time.monotonic() + READ_TIMEOUT_S, ""
    pattern = r'mlfactory_http_requests_total\{endpoint="/v1/predict",method="POST",status="400"\}'
    while not re.search(pattern, metrics) and time.monotonic() < deadline:
        time.sleep(0.1)
        metrics = httpx.get(f"{server.url}/metrics").text
    assert re.search(pattern, metrics), metrics
    assert "malformed body (answered 400) during POST /v1/predict (request bad-chunk-1)" in (
        server.output.read_text()
    )


def test_a_malformed_chunk_sent_with_the_head_keeps_the_request_id(server: LiveServer) -> None:
    """The parser may reject the chunk before the app has seen the request: the 400 still
    carries the client's X-Request-ID, the id the app gives the request."""
    for attempt in range(5):  # the race goes either way; each try must keep the id
        request_id = f"early-bad-chunk-{attempt}"
        head = (
            f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: {request_id}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        with connection(server) as sock:
            sock.sendall(head + b"5\r\n--x\r\n\r\nzz\r\nxx\r\n")
            answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert f"x-request-id: {request_id}\r\n".encode() in answer.lower()


def test_a_body_that_stops_arriving_is_a_408(server: LiveServer) -> None:
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n"
    )
    with connection(server) as sock:
        sock.sendall(head + b"--x\r\n")  # declares 100,000 bytes, sends 5
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"the request body stopped arriving: nothing for 1 s" in answer
    assert b"connection: close" in answer.lower()
    assert re.search(
        r'mlfactory_http_requests_total\{endpoint="/v1/predict",method="POST",status="408"\}',
        httpx.get(f"{server.url}/metrics").text,
    )


def test_keep_alive_connections_are_closed_when_idle(server: LiveServer) -> None:
    with connection(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = read_until_closed(sock)  # the answer, then the close a second later
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"status":"ok"}')


def test_a_client_hanging_up_mid_upload_is_a_499_without_traceback(server: LiveServer) -> None:
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000000\r\n\r\n"
        b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
    )
    for _ in range(2):
        with connection(server) as sock:
            sock.sendall(head + b"\x89PNG" + b"\x00" * 20000)
            time.sleep(0.2)  # the server is reading the body when the client leaves
    deadline = time.monotonic() + READ_TIMEOUT_S
    metrics = ""
    while 'status="499"' not in metrics and time.monotonic() < deadline:
        time.sleep(0.1)
        metrics = httpx.get(f"{server.url}/metrics").text
    assert re.search(
        r'mlfactory_http_requests_total\{endpoint="/v1/predict",method="POST",status="499"\} 2',
        metrics,
    ), metrics
    assert 'status="500"' not in metrics
    output = server.output.read_text()
    assert "client disconnected during POST /v1/predict" in output
    assert "Traceback" not in output and "ClientDisconnect" not in output


def test_a_connection_limit_above_the_open_files_limit_is_one_line(tmp_path: Path) -> None:
    bundle = tiny_bundle(tmp_path / "bundle", "image")

    def low_file_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    result = subprocess.run(
        [sys.executable, "-m", "mlfactory.cli", "serve", str(bundle), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env(max_connections="1000"),
        preexec_fn=low_file_limit,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: MLFACTORY_MAX_CONNECTIONS: 1000 connections need 1064 open files, but the limit "
        "(ulimit -n) is 256: lower the setting or raise the limit"
    ]
