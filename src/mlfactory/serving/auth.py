"""Bearer tokens of the endpoints that are not for every client, and their throttle.

Two tokens, each from the environment (`ServingSettings`), compared in constant time:

- `MLFACTORY_ADMIN_TOKEN`: `POST /v1/admin/reload`. Unset, the admin API is disabled (403).
- `MLFACTORY_MONITOR_TOKEN`: the monitoring reports (`GET /v1/monitoring/drift` and
  `/history`, which name other clients' requests and labels) and `POST /v1/feedback` (which
  writes the labels live accuracy and its alerts are computed from). Unset, they are open, as
  on a laptop; a server others can reach sets it.

Each failed authentication (a wrong token) is logged with the client's address (never the token
sent), and an address with `admin_failures_per_minute` failures in the last minute gets 429 (with
`Retry-After`) without its token being checked, so tokens cannot be guessed at speed. A request
without a token guesses nothing: it gets 401 and is not counted, so a client that does not know
of the token (a UI started without it, a curl) cannot lock out the address it shares with
clients that do.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections import deque
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBearer

from mlfactory.serving.schemas import ErrorResponse
from mlfactory.serving.settings import ServingSettings, env_name

log = logging.getLogger(__name__)
FAILURE_WINDOW_S = 60.0
# Addresses remembered at most; past it the quietest are forgotten (memory stays bounded).
MAX_TRACKED_CLIENTS = 10_000


class AuthThrottle:
    """Failed authentications per client address, over the last `FAILURE_WINDOW_S`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.failures: dict[str, deque[float]] = {}

    def retry_after(self, client: str) -> float | None:
        """Seconds until `client` may try again, or None when it may now."""
        recent = self._recent(client)
        if len(recent) < self.limit:
            return None
        return max(0.0, recent[0] + FAILURE_WINDOW_S - time.monotonic())

    def record_failure(self, client: str) -> int:
        """Count a failure of `client`; returns its failures in the window."""
        if client not in self.failures and len(self.failures) >= MAX_TRACKED_CLIENTS:
            for address in [a for a in self.failures if not self._recent(a)]:
                del self.failures[address]
            if len(self.failures) >= MAX_TRACKED_CLIENTS:  # all busy: forget the oldest
                del self.failures[next(iter(self.failures))]
        recent = self.failures.setdefault(client, deque())
        recent.append(time.monotonic())
        return len(self._recent(client))

    def _recent(self, client: str) -> deque[float]:
        recent = self.failures.get(client, deque())
        cutoff = time.monotonic() - FAILURE_WINDOW_S
        while recent and recent[0] < cutoff:
            recent.popleft()
        return recent


def check_token(request: Request, token: str, name: str) -> None:
    """Let the request through when it carries `Authorization: Bearer <token>`.

    Args:
        request: the request.
        token: the token it must carry.
        name: what the token is for, in messages ("admin", "monitoring").

    Raises:
        HTTPException: 429 when its address failed too often in the last minute (its header
            is not even read), 401 when the header is missing (not counted) or its token is
            wrong (a failure counted).
    """
    throttle: AuthThrottle = request.app.state.auth_throttle
    client = request.client.host if request.client else "unknown"
    wait_s = throttle.retry_after(client)
    if wait_s is not None:
        seconds = math.ceil(wait_s)
        raise HTTPException(
            429,
            f"too many failed {name} authentications from {client}; retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )
    header = request.headers.get("authorization")
    if header is None:
        raise HTTPException(
            401,
            f"missing {name} token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and secrets.compare_digest(
        given.strip().encode(), token.encode()
    ):
        return
    failures = throttle.record_failure(client)
    log.warning("%s authentication failed from %s (%d in the last minute)", name, client, failures)
    raise HTTPException(
        401,
        f"wrong {name} token: send 'Authorization: Bearer <token>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def require_monitor_token(request: Request) -> None:
    """The monitoring and feedback endpoints' guard: `MLFACTORY_MONITOR_TOKEN` when it is set.

    Raises:
        HTTPException: see `check_token`.
    """
    settings: ServingSettings = request.app.state.settings
    if settings.monitor_token is not None:
        check_token(request, settings.monitor_token, "monitoring")


def require_admin_token(request: Request) -> None:
    """The admin API's guard: disabled (403) unless `MLFACTORY_ADMIN_TOKEN` is set.

    Raises:
        HTTPException: 403 when no admin token is set, else see `check_token`.
    """
    settings: ServingSettings = request.app.state.settings
    if settings.admin_token is None:
        raise HTTPException(
            403, f"the admin API is disabled: set {env_name('admin_token')} to enable it"
        )
    check_token(request, settings.admin_token, "admin")


# What the monitoring and feedback endpoints declare: the guard, the bearer scheme (for the
# OpenAPI document and its "Authorize" button) and its two refusals.
MONITOR_GUARD = [Depends(HTTPBearer(auto_error=False)), Depends(require_monitor_token)]
MONITOR_GUARD_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorResponse,
        "description": "MLFACTORY_MONITOR_TOKEN is set, and the request does not carry it.",
    },
    429: {"model": ErrorResponse, "description": "Too many failed authentications from here."},
}
