"""Plain ASGI middlewares (no per-request task overhead): request context, body timeout,
allowed hosts.

Every HTTP request gets an id (`request_ids`): the client's `X-Request-ID` when it is a valid
token, else a new one. Handlers read it from `request.state.request_id`, and the client's own
from `request.state.requested_id` (None when it sent none, or one that was ignored). Every
response carries the id back in `X-Request-ID`, read as the response starts: a prediction whose
chosen id was taken is answered under the new one its handler put there.

Every request is counted and timed, its time labelled with the class of its status (`2xx`...):
a 4xx lasts as long as the client makes it (a 408 waits for a body that stopped arriving, a 499
for a client that hung up), so the latency SLO reads the 2xx and 5xx answers only.

A request body must keep arriving, and arrive whole in time: a wait of more than
`body_timeout_s` for its next part (a client that declared more bytes than it sends), or a body
still arriving `body_deadline_s` after the app began reading it (a client that sends a byte now
and then, never pausing long enough for the first rule), raises `BodyTimeout`, answered 408 and
with the connection closed.

With `MLFACTORY_ALLOWED_HOSTS` set, a request whose `Host` header names none of them is answered
400 with a JSON `detail` (`AllowedHostsMiddleware`; Starlette's `TrustedHostMiddleware` matches).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlfactory.errors import InputError
from mlfactory.serving.metrics import ServingMetrics
from mlfactory.serving.request_ids import client_request_id, new_request_id

# Set in a request's `scope["state"]` when uvicorn's protocol answered it instead of the app (a
# body the HTTP parser rejected, `connections.GuardedHttpProtocol`): the status to count.
PROTOCOL_STATUS = "protocol_status"
# Set in a request's `scope["state"]` once `AllowedHostsMiddleware` let it through.
_HOST_ALLOWED = "host_allowed"
# Paths no route matched share one label, so scanners cannot blow up the metric's cardinality.
UNMATCHED = "unmatched"


class RequestContextMiddleware:
    """Assigns request ids and counts and times every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # The protocol may have answered a malformed body (400) with an id before this ran.
        state = scope.setdefault("state", {})
        requested_id = state.setdefault("requested_id", client_request_id(scope.get("headers", [])))
        state.setdefault("request_id", requested_id or new_request_id())
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                request_id = str(state["request_id"])  # a handler may have given a new one
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            status = scope["state"].get(PROTOCOL_STATUS, status)
            endpoint = _endpoint(scope)
            self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
            self.metrics.latency.labels(endpoint, status_class(status)).observe(
                time.perf_counter() - started
            )


def status_class(status: int) -> str:
    """The class of an HTTP status as a metric label: `"2xx"` for 200, `"4xx"` for 499."""
    return f"{status // 100}xx"


class BodyTimeout(InputError):
    """The request body stopped arriving (408)."""


class BodyTimeoutMiddleware:
    """Fails a request whose body does not keep arriving, or takes longer than the deadline
    (see the module docstring). Without `deadline_s`, the app's `state.settings` gives it."""

    def __init__(self, app: ASGIApp, timeout_s: float, deadline_s: float | None = None) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline_s = self.deadline_s
        if deadline_s is None:
            deadline_s = float(scope["app"].state.settings.body_deadline_s)
        ends_at = asyncio.get_running_loop().time() + deadline_s
        body_done = False

        async def receive_in_time() -> Message:
            nonlocal body_done
            if body_done:  # later calls wait for a disconnect, which may take any time
                return await receive()
            left = ends_at - asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(max(0.0, min(self.timeout_s, left))):
                    message = await receive()
            except TimeoutError:
                raise self._timeout(deadline_s, past_deadline=left <= self.timeout_s) from None
            body_done = message["type"] != "http.request" or not message.get("more_body")
            return message

        await self.app(scope, receive_in_time, send)

    def _timeout(self, deadline_s: float, past_deadline: bool) -> BodyTimeout:
        if past_deadline:
            return BodyTimeout(
                f"the request body did not arrive within {deadline_s:g} s; send it faster", 408
            )
        return BodyTimeout(
            f"the request body stopped arriving: nothing for {self.timeout_s:g} s", 408
        )


class AllowedHostsMiddleware:
    """Refuses (400, JSON `detail`) a request whose `Host` header names no allowed host.

    Starlette's `TrustedHostMiddleware` decides (exact names, `*.domain` wildcards, the port
    ignored, a malformed header refused); its plain-text refusal is replaced by the API's JSON
    error. `allowed_hosts` is `settings.allowed_host_names`' list.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.trusted = TrustedHostMiddleware(self._allowed, list(allowed_hosts), www_redirect=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_or_refuse(message: Message) -> None:
            if state.get(_HOST_ALLOWED):  # the app's own answer
                await send(message)
            elif message["type"] == "http.response.start":  # Starlette's refusal, as JSON
                await _host_refusal(scope)(scope, receive, send)

        await self.trusted(scope, receive, send_or_refuse)

    async def _allowed(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"][_HOST_ALLOWED] = True
        await self.app(scope, receive, send)


def _host_refusal(scope: Scope) -> JSONResponse:
    host = Headers(scope=scope).get("host")
    named = "no Host header" if host is None else f"Host {host[:100]!r}"
    detail = (
        f"{named}: this server answers only to the host names it is configured with "
        "(MLFACTORY_ALLOWED_HOSTS); send the request to one of them"
    )
    return JSONResponse({"detail": detail}, status_code=400)


def _endpoint(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED
