"""The web UI's only way to the model: the server's HTTP API, through `httpx`.

Every call returns decoded JSON or raises `ApiError`, whose message is one sentence a page can
show as it is: the API's own `detail` for a refused request, or why the API could not be reached
(or called at all: an address `httpx` refuses, any other `httpx` error).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from mlfactory.errors import MlfactoryError

TIMEOUT_S = 30.0
MONITOR_TOKEN_ENV = "MLFACTORY_MONITOR_TOKEN"


class ApiError(MlfactoryError):
    """The API refused a request or could not be reached.

    Attributes:
        status: the HTTP status of a refusal; None when no answer came.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    """A client of one mlfactory server.

    Args:
        base_url: the server's address, e.g. `http://127.0.0.1:8000`.
        timeout_s: how long one call may take.
        token: the server's `MLFACTORY_MONITOR_TOKEN`, sent as a bearer token (the monitoring
            and feedback endpoints need it when the server sets one).
    """

    def __init__(
        self, base_url: str, timeout_s: float = TIMEOUT_S, token: str | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """`GET path` as JSON.

        Raises:
            ApiError: a 4xx/5xx answer (its `detail`), or no answer.
        """
        return self._call("GET", path, params=params)

    def model(self) -> dict[str, Any]:
        """`GET /v1/model`: name, version, modality, labels."""
        return dict(self.get("/v1/model"))

    def card(self) -> dict[str, Any]:
        """`GET /v1/model/card`."""
        return dict(self.get("/v1/model/card"))

    def predict_files(self, files: Sequence[tuple[str, bytes, str]]) -> dict[str, Any]:
        """`POST /v1/predict` with files (name, content, media type), classified in order."""
        parts = [("files", (name, data, media)) for name, data, media in files]
        return dict(self._call("POST", "/v1/predict", files=parts))

    def predict_texts(self, texts: Sequence[str]) -> dict[str, Any]:
        """`POST /v1/predict` with texts, classified in order."""
        return dict(self._call("POST", "/v1/predict", json={"texts": list(texts)}))

    def feedback(self, request_id: str, input_index: int, label: str) -> dict[str, Any]:
        """`POST /v1/feedback`: the right label of input `input_index` of request `request_id`."""
        body = {"request_id": request_id, "input_index": input_index, "label": label}
        answer = self._call("POST", "/v1/feedback", json=body)
        return dict(answer) if isinstance(answer, dict) else {}

    def drift(self, last: int, since: str | None = None) -> dict[str, Any]:
        """`GET /v1/monitoring/drift?last=N`: the drift report of the last `last` predictions
        (of those within `since`, a duration such as `1h`, when given)."""
        return dict(self.get("/v1/monitoring/drift", _window_query(last, since)))

    def history(self, last: int, buckets: int, since: str | None = None) -> list[dict[str, Any]]:
        """`GET /v1/monitoring/history`: the last `last` predictions (within `since`) in
        `buckets` windows."""
        query = {**_window_query(last, since), "buckets": buckets}
        answer = self.get("/v1/monitoring/history", query)
        return list(answer.get("buckets", [])) if isinstance(answer, dict) else []

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}{path}"
        try:
            response = httpx.request(
                method, url, timeout=self.timeout_s, headers=self._headers, **kwargs
            )
        except httpx.TimeoutException:
            raise ApiError(
                f"the API at {self.base_url} did not answer {method} {path} within "
                f"{self.timeout_s:.0f} s"
            ) from None
        except httpx.TransportError as exc:
            raise ApiError(
                f"cannot reach the API at {self.base_url} ({type(exc).__name__}: {exc}); "
                "is `mlfactory serve` running there?"
            ) from None
        except httpx.InvalidURL as exc:
            raise ApiError(
                f"the API's address {self.base_url} is not a valid URL ({exc}): start "
                "`mlfactory ui` with --api set to the server's, e.g. http://127.0.0.1:8000"
            ) from None
        except (httpx.HTTPError, httpx.StreamError, httpx.CookieConflict) as exc:
            raise ApiError(
                f"{method} {path} to the API at {self.base_url} failed "
                f"({type(exc).__name__}: {exc})"
            ) from None
        if response.status_code >= 400:
            raise ApiError(_refusal(method, path, response), response.status_code)
        try:
            return response.json()
        except ValueError:
            raise ApiError(f"{method} {path} answered something that is not JSON") from None


def _refusal(method: str, path: str, response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if response.status_code == 404 and detail in (None, "Not Found"):
        return f"{method} {path} is not available on this server (404): it may predate it"
    if response.status_code == 401:  # the server's monitoring token, which the UI lacks
        return (
            f"{detail or 'unauthorized'} (401): start `mlfactory ui` with "
            f"{MONITOR_TOKEN_ENV} set to the server's"
        )
    if isinstance(detail, str) and detail:
        return f"{detail} ({response.status_code})"
    return f"{method} {path} answered {response.status_code}"


def _window_query(last: int, since: str | None) -> dict[str, Any]:
    return {"last": last} if since is None else {"last": last, "since": since}
