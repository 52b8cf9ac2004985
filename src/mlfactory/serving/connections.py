"""Connection limits uvicorn has no option for, as its HTTP protocol (`mlfactory serve` uses it).

`GuardedHttpProtocol` is uvicorn's httptools protocol plus four guards, read from the
`MLFACTORY_*` settings:

- a request head (request line and headers) must arrive whole within `header_timeout_s` of the
  connection opening or of its first byte; otherwise the connection gets a 408 and is closed,
  or, if it sent nothing at all, is just closed. Slow-header attacks (slowloris) and idle
  sockets hold a connection for seconds, not forever;
- a request head may not exceed `max_header_bytes` (431, then closed): it is counted as the
  bytes arrive, so an endless header costs at most that much memory;
- an idle keep-alive connection is closed after `keep_alive_timeout_s` (uvicorn's own timer);
- at most `max_connections` connections are open at once. When one more arrives, the
  connection that has waited longest without a request in progress is closed to make room;
  only when every connection is busy is the new one refused (503). An idle flood therefore
  never locks out a new client, and file descriptors stay below the process limit.

The body has its own timeout, in the app (`middleware.BodyTimeoutMiddleware`). Guard events are
counted in `mlfactory_connection_guard_events_total{event}` and logged as warnings, each kind at
most once per `LOG_INTERVAL_S`, with a count.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import Counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from mlfactory.serving.metrics import connection_guard_events
from mlfactory.serving.settings import ServingSettings, env_name

log = logging.getLogger(__name__)
LOG_INTERVAL_S = 10.0
# How `uvicorn.run(http=...)` names this protocol (an import string: it reaches every worker).
PROTOCOL = "mlfactory.serving.connections:GuardedHttpProtocol"


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

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._start_head_timer()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.awaiting_head:
            self.head_bytes += len(data)
        super().data_received(data)
        too_long = self.awaiting_head and self.head_bytes > self.max_header_bytes
        if too_long and not self.transport.is_closing():
            GUARD_LOG.add(
                "head_too_large", f"request head over {env_name('max_header_bytes')} (431)"
            )
            self._refuse(
                431, f"request head too large: over {self.max_header_bytes} bytes of headers"
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.head_timer is None:  # the first byte of a request after a keep-alive pause
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        self.awaiting_head, self.head_bytes = False, 0
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.awaiting_head = True  # what comes next is the next request's head

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.idle_since = time.monotonic()

    def is_idle(self) -> bool:
        """Waiting for a request: none in progress, and no complete head received."""
        return self.awaiting_head and (self.cycle is None or self.cycle.response_complete)

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
        """Close the connection idle the longest, or refuse this one if none is idle."""
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
        GUARD_LOG.add("refused", f"connection refused: {env_name('max_connections')} busy (503)")
        self._refuse(503, "the server has too many open connections; retry shortly")

    def _refuse(self, status: int, detail: str) -> None:
        """Answer `status` with a JSON detail (when no response is under way) and close."""
        self._stop_head_timer()
        if self.cycle is None or self.cycle.response_complete:
            body = json.dumps({"detail": detail}).encode()
            head = (
                b"content-type: application/json\r\n"
                + b"content-length: %d\r\n" % len(body)
                + b"connection: close\r\n\r\n"
            )
            self.transport.write(STATUS_LINE[status] + head + body)
        self.transport.close()
