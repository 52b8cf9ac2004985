"""Slow-body attacks on a real `mlfactory serve` process: clients that trickle a byte now and
then hold every connection slot until the body deadline (`MLFACTORY_BODY_DEADLINE_S`) cuts
them off with a 408, and health probes answer all the while.

One server with a 4-connection limit, a 1 s pause timeout and a 2 s body deadline; each test
opens at most 6 loopback sockets and runs for a few seconds.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from .live_server import LiveServer, live_server
from .test_connections import connection, read_until_closed
from .tiny_bundles import tiny_bundle

MAX_CONNECTIONS = 4
DEADLINE_S = 2.0
TRICKLE_S = 0.4  # below the 1 s pause timeout: only the deadline can stop these clients
LIMITS = {
    "header_timeout_s": "2",
    "body_timeout_s": "1",
    "body_deadline_s": str(DEADLINE_S),
    "keep_alive_timeout_s": "1",
    "max_connections": str(MAX_CONNECTIONS),
}
# A 30 MB upload whose file data will come a byte at a time.
SLOW_UPLOAD_HEAD = (
    b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 30000000\r\n\r\n"
    b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("slow-bodies")
    bundle = tiny_bundle(workdir / "bundle", "image")
    with live_server(bundle, workdir, **LIMITS) as running:
        yield running


def trickle_until_answered(slow: list[socket.socket], server: LiveServer) -> tuple[dict, list]:
    """Send each slow client one byte every TRICKLE_S until the server answers it, probing
    `/health` while the deadline has not passed; at most DEADLINE_S + 4 s.

    Returns each client's answer (by index) and the health probes' statuses.
    """
    started, answers, probes = time.monotonic(), {}, []
    while len(answers) < len(slow) and time.monotonic() - started < DEADLINE_S + 4:
        waiting = [sock for index, sock in enumerate(slow) if index not in answers]
        readable, _, _ = select.select(waiting, [], [], TRICKLE_S)
        for sock in readable:
            answers[slow.index(sock)] = read_until_closed(sock)
        for index, sock in enumerate(slow):
            if index not in answers:
                try:
                    sock.sendall(b"a")
                except OSError:
                    answers[index] = read_until_closed(sock)
        if time.monotonic() - started < DEADLINE_S - 0.5:
            probes.append(httpx.get(f"{server.url}/health", timeout=5.0).status_code)
    return answers, probes


def test_trickled_bodies_hit_the_deadline_while_health_answers(server: LiveServer) -> None:
    with ExitStack() as stack:
        slow = [stack.enter_context(connection(server)) for _ in range(MAX_CONNECTIONS)]
        for sock in slow:
            sock.sendall(SLOW_UPLOAD_HEAD)
        started = time.monotonic()
        answers, probes = trickle_until_answered(slow, server)
        elapsed = time.monotonic() - started
    assert probes and set(probes) == {200}, probes  # every probe, with every slot busy
    assert sorted(answers) == list(range(MAX_CONNECTIONS))
    for answer in answers.values():
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"the request body did not arrive within 2 s" in answer
    assert DEADLINE_S - 0.5 < elapsed < DEADLINE_S + 3


def test_the_connection_past_the_limit_serves_health_probes_only(server: LiveServer) -> None:
    """With every slot busy, one more connection is let in, for health probes only: any other
    request on it is refused (503)."""
    with ExitStack() as stack:
        slow = [stack.enter_context(connection(server)) for _ in range(MAX_CONNECTIONS)]
        for sock in slow:
            sock.sendall(SLOW_UPLOAD_HEAD)
        time.sleep(0.3)  # the server has read every head: all slots busy
        for request in (b"GET /v1/model", b"POST /health", b"GET /healthz"):
            with connection(server) as extra:
                extra.sendall(request + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                refused = read_until_closed(extra)
            assert refused.startswith(b"HTTP/1.1 503 "), (request, refused[:200])
            assert b"too many open connections" in refused
        with connection(server) as probe:
            probe.sendall(b"HEAD /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert probe.recv(65536).startswith(b"HTTP/1.1 200 ")
