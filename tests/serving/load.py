"""A bounded HTTP load for the reliability tests: N concurrent clients, capped in time AND count.

The load runs on its own thread (with its own event loop), so a test can kill, restart or
reload the server while requests are in flight, then read what every request got.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

import httpx


@dataclass
class Outcome:
    """What one request got: a status and body, or the transport error it died of."""

    status: int | None
    request_id: str | None = None
    model_version: str | None = None
    error: str | None = None


@dataclass
class LoadResult:
    """All outcomes, in completion order."""

    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def answered(self) -> list[Outcome]:
        """Requests that got a 200 with a full prediction body."""
        return [o for o in self.outcomes if o.status == 200]

    @property
    def failed(self) -> list[Outcome]:
        """Requests that got anything else (an error status or no response)."""
        return [o for o in self.outcomes if o.status != 200]


class BackgroundLoad:
    """`with BackgroundLoad(url, payloads) as load:` sends requests until stopped or capped."""

    def __init__(
        self,
        url: str,
        payloads: list[list[tuple[str, bytes]]],
        concurrency: int = 8,
        max_seconds: float = 30.0,
        max_requests: int = 5000,
    ) -> None:
        """Prepare the load.

        Args:
            url: the server's base URL (127.0.0.1 only).
            payloads: requests to choose from, each a list of (file name, bytes).
            concurrency: clients sending requests back to back.
            max_seconds: the load stops after this long at the latest.
            max_requests: and after this many requests at the latest.
        """
        assert url.startswith("http://127.0.0.1:"), "load tests stay on this machine"
        self.url, self.payloads, self.concurrency = url, payloads, concurrency
        self.max_seconds, self.max_requests = max_seconds, max_requests
        self.result = LoadResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def finish(self) -> LoadResult:
        """Wait until the load reaches its time or request cap, and return every outcome."""
        self._thread.join(timeout=self.max_seconds + 60)
        return self.result

    def stop(self) -> LoadResult:
        """Stop sending, wait for requests in flight, and return every outcome."""
        self._stop.set()
        self._thread.join(timeout=self.max_seconds + 60)
        return self.result

    def wait_for_answers(self, count: int, timeout_s: float = 60.0) -> None:
        """Block until `count` requests were answered (or the timeout, or the load ended)."""
        deadline = time.monotonic() + timeout_s
        while len(self.result.answered) < count and time.monotonic() < deadline:
            if not self._thread.is_alive():
                return
            time.sleep(0.05)

    async def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        budget = iter(range(self.max_requests))
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(base_url=self.url, timeout=60.0, limits=limits) as client:

            async def worker(seed: int) -> None:
                chooser = random.Random(seed)
                while not self._stop.is_set() and time.monotonic() < deadline:
                    if next(budget, None) is None:
                        return
                    await self._send(client, chooser.choice(self.payloads))

            await asyncio.gather(*(worker(seed) for seed in range(self.concurrency)))

    async def _send(self, client: httpx.AsyncClient, payload: list[tuple[str, bytes]]) -> None:
        files = [("files", (name, data, "application/octet-stream")) for name, data in payload]
        try:
            response = await client.post("/v1/predict", files=files)
        except httpx.HTTPError as exc:
            self.result.outcomes.append(Outcome(None, error=f"{type(exc).__name__}: {exc}"))
            return
        if response.status_code != 200:
            self.result.outcomes.append(Outcome(response.status_code, error=response.text))
            return
        body = response.json()
        if body["request_id"] != response.headers.get("x-request-id") or len(
            body["predictions"]
        ) != len(payload):
            self.result.outcomes.append(Outcome(None, error=f"malformed answer: {body}"))
            return
        self.result.outcomes.append(
            Outcome(200, request_id=body["request_id"], model_version=body["model"]["version"])
        )
