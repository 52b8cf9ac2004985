"""Connection limits uvicorn has no option for, as its HTTP protocol (`mlfactory serve` uses it).

`GuardedHttpProtocol` is uvicorn's httptools protocol plus four guards, read from the
`MLFACTORY_*` settings:

- a request head (request line and headers) must arrive whole within `header_timeout_s` of the
  connection opening or of its first byte; otherwise the connection gets a 408 and is closed,
  or, if it sent nothing at all, is just closed. Slow-header attacks (slowloris) and idle
  sockets hold a connection for seconds, not forever;
- a request head may not exceed `max_header_bytes` (431, then closed): it is counted as the
  bytes arrive, so an endless header costs at most that much memory, and measured again once
  parsed, so a head that arrives whole in one read is held to the same limit;
- an idle keep-alive connection is closed after `keep_alive_timeout_s` (uvicorn's own timer).
  So is a connection whose request was answered before its body was read (a 413): the client
  has `keep_alive_timeout_s` to finish sending what it declared (read and dropped), then the
  connection is closed; such a connection counts as idle for the connection limit;
- at most `max_connections` connections are open at once. When one more arrives, the
  connection that has waited longest without a request in progress is closed to make room;
  when every connection is busy, the new one is let in past the limit for a health probe only
  (`GET` or `HEAD /health`; anything else is refused 503 once its head arrives), and with one
  such connection open one more is refused (503) at once. An idle flood therefore never locks
  out a new client, busy connections (slow bodies) never fail the probes that keep a pod alive,
  and file descriptors stay below the process limit.

A request the HTTP parser rejects (a malformed request line, header or chunk) is answered 400
with a JSON `detail` and an `X-Request-ID`, like every other error, and counted as a 400 (not
as a client that hung up) when the app was already reading its body.

The body has its own timeout and deadline, in the app (`middleware.BodyTimeoutMiddleware`).
Guard events are counted in `mlfactory_connection_guard_events_total{event}` and logged as
warnings, each kind at most once per `LOG_INTERVAL_S`, with a count.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from collections import Counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from mlfactory.serving.metrics import connection_guard_events
from mlfactory.serving.middleware import PROTOCOL_STATUS
from mlfactory.serving.request_ids import request_id_from
from mlfactory.serving.settings import ServingSettings, env_name

log = logging.getLogger(__name__)
LOG_INTERVAL_S = 10.0
# How `uvicorn.run(http=...)` names this protocol (an import string: it reaches every worker).
PROTOCOL = "mlfactory.serving.connections:GuardedHttpProtocol"
# What a parsed head adds to its URL and header bytes: "GET ", " HTTP/1.1\r\n", ": " and "\r\n"
# per header, the blank line.
HEAD_FRAMING_BYTES = 16
# What a connection past the limit may ask for (see the module docstring).
HEALTH_PATH = b"/health"
PROBE_METHODS = (b"GET", b"HEAD")


@functools.cache
def _settings() -> ServingSettings:
    """The process's settings, read once (the server checked them before starting)."""
    return ServingSettings.from_env()


class _GuardLog:
    """Counts guard events, and logs them as warnings: each kind at most once per
    LOG_INTERVAL_S, with the count of such events since its previous line (a flood is a few
    lines, not thousands)."""

    def __init__(self) -> None:
        self.unlogged: Counter[str] = Counter()
        self.logged_at: dict[str, float] = {}

    def add(self, event: str, message: str) -> None:
        """One event of a kind of `metrics.GUARD_EVENTS`, described by `message`."""
        connection_guard_events.labels(event).inc()
        self.unlogged[event] += 1
        now = time.monotonic()
        if now - self.logged_at.get(event, -LOG_INTERVAL_S) >= LOG_INTERVAL_S:
            count, logged_before = self.unlogged[event], event in self.logged_at
            since = f" ({count} since the previous such line)" if logged_before else ""
            log.warning("connection guard: %s%s", message, since)
            self.unlogged[event] = 0
            self.logged_at[event] = now


GUARD_LOG = _GuardLog()


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-head timeout and size limit, a keep-alive
    timeout and a connection limit (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = _settings()
        # uvicorn arms its keep-alive timer with this (typed int there; call_later takes floats)
        self.timeout_keep_alive = settings.keep_alive_timeout_s  # type: ignore[assignment]
        self.header_timeout_s = settings.header_timeout_s
        self.max_header_bytes = settings.max_header_bytes
        self.max_connections = settings.max_connections
        self.head_bytes = 0  # bytes of the request head received so far
        self.awaiting_head = True  # between two requests, or before the first
        self.idle_since = time.monotonic()
        self.head_timer: asyncio.TimerHandle | None = None
        self.head_refused = False  # answered 431: nothing more of this connection is parsed
        self.drain_timer: asyncio.TimerHandle | None = None  # see `_drain_unread_body`
        self.probes_only = False  # past the connection limit: health probes only

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._start_head_timer()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_draining()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.awaiting_head:
            self.head_bytes += len(data)
        super().data_received(data)
        too_long = self.awaiting_head and self.head_bytes > self.max_header_bytes
        if too_long and not self.transport.is_closing():
            self._refuse_large_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.head_timer is None and not self.head_refused:  # a request after a pause
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        if self.head_refused:
            return
        self.awaiting_head, self.head_bytes = False, 0
        self._stop_head_timer()
        if self._parsed_head_bytes() > self.max_header_bytes:
            self._refuse_large_head()
            return
        if self.probes_only and not self._is_health_probe():
            self.head_refused = True  # nothing more of this connection is parsed
            GUARD_LOG.add("refused", f"request refused: {env_name('max_connections')} busy (503)")
            self._refuse(503, "the server has too many open connections; retry shortly")
            return
        super().on_headers_complete()

    def _is_health_probe(self) -> bool:
        path = self.url.split(b"?", 1)[0]
        return path == HEALTH_PATH and self.parser.get_method() in PROBE_METHODS

    def on_body(self, body: bytes) -> None:
        if not self.head_refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.head_refused:
            return
        super().on_message_complete()
        self.awaiting_head = True  # what comes next is the next request's head
        if self.drain_timer is not None:  # the answered request's body is all in: idle now
            self._stop_draining()
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.idle_since = time.monotonic()
        if self.head_refused:  # the next head was too large: refused now that this is answered
            self._refuse_head_now()
        elif self._answered_before_its_body() and not self.transport.is_closing():
            self._drain_unread_body()

    def send_400_response(self, msg: str) -> None:
        """A request the parser rejected: a JSON 400, counted as such by the app if it was
        reading the body; nothing when the connection was already refused."""
        if self.transport.is_closing():
            return
        request_id = None
        if self.cycle is not None and not self.cycle.response_complete:
            state = self.cycle.scope.setdefault("state", {})
            state[PROTOCOL_STATUS] = 400
            # the id the app gives it, whether or not the app has seen the request yet
            request_id = state.setdefault(
                "request_id", request_id_from(self.cycle.scope["headers"])
            )
        self._stop_head_timer()
        self._stop_draining()
        self._write_and_close(400, f"malformed HTTP request: {msg}", request_id)

    def is_idle(self) -> bool:
        """Waiting for a request (none in progress, no complete head received), or for the
        rest of a body whose request was answered."""
        waiting = self.awaiting_head or self.drain_timer is not None
        return waiting and (self.cycle is None or self.cycle.response_complete)

    def _answered_before_its_body(self) -> bool:
        """The request just answered is the latest (no pipelined one waits) and its body is
        still arriving."""
        latest_answered = self.cycle is not None and self.cycle.response_complete
        return latest_answered and not self.awaiting_head

    def _parsed_head_bytes(self) -> int:
        headers = sum(len(name) + len(value) + 4 for name, value in self.headers)
        return len(self.url) + headers + HEAD_FRAMING_BYTES

    def _refuse_large_head(self) -> None:
        """431 and close; after the answer to the request before it, if that is under way (a
        pipelined head)."""
        self.head_refused = True
        GUARD_LOG.add("head_too_large", f"request head over {env_name('max_header_bytes')} (431)")
        if self.cycle is None or self.cycle.response_complete:
            self._refuse_head_now()
        else:
            self.transport.pause_reading()

    def _refuse_head_now(self) -> None:
        self._refuse(431, f"request head too large: over {self.max_header_bytes} bytes of headers")

    def _drain_unread_body(self) -> None:
        """The request was answered before its body was read (a 413): read and drop the rest
        for at most the keep-alive timeout, then close. Closing at once would reset the
        connection, and the client could lose the answer before reading it."""
        self.drain_timer = self.loop.call_later(self.timeout_keep_alive, self._drain_over)

    def _drain_over(self) -> None:
        self.drain_timer = None
        if not self.transport.is_closing():
            log.debug("closed a connection whose answered request's body did not end in time")
            self.transport.close()

    def _stop_draining(self) -> None:
        if self.drain_timer is not None:
            self.drain_timer.cancel()
            self.drain_timer = None

    def _start_head_timer(self) -> None:
        self.head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or not self.awaiting_head:
            return
        if self.head_bytes == 0:  # an idle socket: nothing to answer
            log.debug("closed a connection that sent no request within the header timeout")
            self.transport.close()
            return
        GUARD_LOG.add(
            "head_timeout", f"request head not complete within {env_name('header_timeout_s')} (408)"
        )
        self._refuse(408, f"request head not received within {self.header_timeout_s:g} s; closing")

    def _make_room(self) -> None:
        """Close the connection idle the longest; if none is idle, let this one in for health
        probes only, or refuse it when such a connection is already open."""
        idle = [
            other
            for other in self.connections
            if isinstance(other, GuardedHttpProtocol) and other is not self and other.is_idle()
        ]
        if idle:
            oldest = min(idle, key=lambda other: other.idle_since)
            oldest._stop_head_timer()
            oldest.transport.close()
            GUARD_LOG.add(
                "idle_closed",
                f"idle connection closed to stay within {env_name('max_connections')}",
            )
            return
        if len(self.connections) <= self.max_connections + 1:  # one more, for health probes
            self.probes_only = True
            return
        GUARD_LOG.add("refused", f"connection refused: {env_name('max_connections')} busy (503)")
        self._refuse(503, "the server has too many open connections; retry shortly")

    def _refuse(self, status: int, detail: str) -> None:
        """Answer `status` with a JSON detail (when no response is under way) and close."""
        self._stop_head_timer()
        self._stop_draining()
        if self.cycle is None or self.cycle.response_complete:
            self._write_and_close(status, detail)
        else:
            self.transport.close()

    def _write_and_close(self, status: int, detail: str, request_id: str | None = None) -> None:
        """Write a whole `status` response with a JSON `detail` and the request's id (a new one
        when the app never saw the request), then close the connection."""
        body = json.dumps({"detail": detail}).encode()
        head = [
            *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-request-id: %s\r\n" % (request_id or uuid.uuid4().hex).encode(),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(STATUS_LINE[status] + b"".join(head) + body)
        self.transport.close()
