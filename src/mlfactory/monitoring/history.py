"""A window cut into time buckets, each checked on its own: what a chart over time draws.

`history` splits a window into `buckets` equal spans of time between its first and last
prediction and runs `check_window` on each, adding the serving latency and the number of
requests. `GET /v1/monitoring/history` returns its result; a bucket without predictions has
`n` 0 and nulls, and a bucket too small for any check has `drift` null.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mlfactory.monitoring.drift import INSUFFICIENT
from mlfactory.monitoring.profile import ReferenceProfile
from mlfactory.monitoring.report import MonitorSettings, Window, check_window

MAX_BUCKETS = 100
BUCKET_KEYS = (
    "n",
    "ood_fraction",
    "accuracy_estimated",
    "accuracy_estimated_ci",
    "accuracy_live",
    "labelled",
    "drift",
    "p_values",
    "latency_p50_ms",
    "latency_p95_ms",
    "requests",
)


def history(
    profile: ReferenceProfile,
    window: Window,
    model: Mapping[str, str],
    buckets: int,
    settings: MonitorSettings | None = None,
) -> list[dict[str, Any]]:
    """Check each of `buckets` equal time spans of `window`, oldest first.

    Args:
        profile: the bundle's reference profile.
        window: the logged predictions, with timestamps (and latencies, request ids).
        model: {"name": ..., "version": ...} of the bundle.
        buckets: how many spans (1 to `MAX_BUCKETS`).
        settings: level, correction, sizes of each bucket's checks.

    Returns:
        One dict per bucket: from, to, n, ood_fraction, accuracy_estimated,
        accuracy_estimated_ci, accuracy_live, labelled, drift, p_values, latency_p50_ms,
        latency_p95_ms, requests. Empty when the window is.
    """
    if not 1 <= buckets <= MAX_BUCKETS:
        raise ValueError(f"buckets must be 1 to {MAX_BUCKETS}, got {buckets}")
    times = list(window.timestamps)
    if not len(window) or len(times) != len(window):
        return []
    start, end = min(times), max(times)
    span = (end - start) / buckets
    # Bucket i holds [start + i span, start + (i + 1) span); the last also holds `end`.
    offsets = np.array([(moment - start) / span if span else 0.0 for moment in times])
    index = np.minimum(offsets.astype(np.int64), buckets - 1)
    return [
        _bucket(profile, window, np.flatnonzero(index == i), model, settings)
        | {"from": (start + span * i).isoformat(), "to": (start + span * (i + 1)).isoformat()}
        for i in range(buckets)
    ]


def _bucket(
    profile: ReferenceProfile,
    window: Window,
    rows: np.ndarray,
    model: Mapping[str, str],
    settings: MonitorSettings | None,
) -> dict[str, Any]:
    part = take(window, rows)
    if not len(part):
        return dict.fromkeys(BUCKET_KEYS) | {"n": 0, "labelled": 0, "p_values": {}, "requests": 0}
    report = check_window(profile, part, model, settings).to_json()
    accuracy = report["accuracy"]
    latency = part.latency_ms if part.latency_ms is not None else np.zeros(0)
    return {
        "n": len(part),
        "ood_fraction": report["ood"]["fraction"],
        "accuracy_estimated": accuracy["estimated"],
        "accuracy_estimated_ci": accuracy["estimated_ci"],
        "accuracy_live": accuracy["live"],
        "labelled": accuracy["labelled"],
        # A bucket too small for every check gets no verdict, as in the report's status.
        "drift": None if report["status"] == INSUFFICIENT else report["drift"],
        "p_values": {check["name"]: check["p_value"] for check in report["checks"]},
        "latency_p50_ms": _percentile(latency, 50),
        "latency_p95_ms": _percentile(latency, 95),
        "requests": len(set(part.request_ids)),
    }


def take(window: Window, rows: np.ndarray) -> Window:
    """The window's rows `rows` (indices), as a window."""

    def pick(values: Any) -> Any:
        return [values[i] for i in rows] if values is not None and len(values) else values

    return Window(
        embeddings=np.asarray(window.embeddings)[rows],
        probabilities=np.asarray(window.probabilities)[rows],
        summaries=pick(window.summaries),
        timestamps=pick(window.timestamps),
        true_labels=pick(window.true_labels),
        ood_scores=None if window.ood_scores is None else window.ood_scores[rows],
        ood_scorers=pick(window.ood_scorers),
        latency_ms=None if window.latency_ms is None else window.latency_ms[rows],
        request_ids=pick(window.request_ids),
        input_indices=pick(window.input_indices),
    )


def _percentile(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if len(values) else None
