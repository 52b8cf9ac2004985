"""Plain ASGI middlewares (no per-request task overhead): request context, body timeout.

Every HTTP request gets an id: the client's `X-Request-ID` when it is a short token, else a new
one. Handlers read it from `request.state.request_id`; every response carries it back in
`X-Request-ID`, and the prediction log stores it. Every request is counted and timed, its time
labelled with the class of its status (`2xx`...): a 4xx lasts as long as the client makes it
(a 408 waits for a body that stopped arriving, a 499 for a client that hung up), so the latency
SLO reads the 2xx and 5xx answers only.

A request body must keep arriving, and arrive whole in time: a wait of more than
`body_timeout_s` for its next part (a client that declared more bytes than it sends), or a body
still arriving `body_deadline_s` after the app began reading it (a client that sends a byte now
and then, never pausing long enough for the first rule), raises `BodyTimeout`, answered 408 and
with the connection closed.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import AfterValidator, WithJsonSchema
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlfactory.errors import InputError
from mlfactory.serving.log_tables import MAX_REQUEST_ID_CHARS
from mlfactory.serving.metrics import ServingMetrics

REQUEST_ID_HEADER = "x-request-id"
# Set in a request's `scope["state"]` when uvicorn's protocol answered it instead of the app (a
# body the HTTP parser rejected, `connections.GuardedHttpProtocol`): the status to count.
PROTOCOL_STATUS = "protocol_status"
# What a request id may be: the client's own `X-Request-ID` and `POST /v1/feedback`'s
# `request_id` must match it.
VALID_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_CHARS}}}")


def check_request_id(value: str) -> str:
    """`value` when it is a request id as the server makes them (`VALID_REQUEST_ID`).

    Raises:
        ValueError: it is not (e.g. a NUL character, which PostgreSQL refuses to store).
    """
    if not VALID_REQUEST_ID.fullmatch(value):
        raise ValueError(
            f"must be 1 to {MAX_REQUEST_ID_CHARS} letters, digits, '.', '_', ':' or '-' "
            "(a request id)"
        )
    return value


# A request id in a request body (`POST /v1/feedback`): refused unless the server could have
# made it, with a message that says what a request id is.
RequestId = Annotated[
    str,
    AfterValidator(check_request_id),
    WithJsonSchema({"type": "string", "pattern": f"^{VALID_REQUEST_ID.pattern}$"}),
]
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
        request_id = state.setdefault("request_id", request_id_from(scope.get("headers", [])))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
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


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's `X-Request-ID` if it is a valid token, else a new random id."""
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if VALID_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def _endpoint(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED
