"""The inputs of a window to look at first: the most out-of-distribution ones, by request.

The OOD fraction says how many inputs the model has not seen the like of; this says which. Each
names the request (`X-Request-ID`, which a client may set to its own id) and the input's
position in it: the pair that finds the input in the client's records, and that
`POST /v1/feedback` takes to send its true label back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

# The report lists this many inputs by default (at most MAX_LISTED); the terminal shows the
# first SHOWN.
LISTED = 10
MAX_LISTED = 1000
SHOWN = 3


@dataclass(frozen=True)
class FlaggedInput:
    """One input whose OOD score is above the profile's threshold.

    Attributes:
        request_id: the request that sent it.
        input_index: its position in that request (0: the first).
        time: when it was predicted (None: not logged).
        label: the label the model predicted.
        confidence: the model's probability for that label.
        ood_score: its out-of-distribution score.
        true_label: the true label sent back for it, if any.
    """

    request_id: str
    input_index: int
    time: datetime | None
    label: str
    confidence: float
    ood_score: float
    true_label: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "input_index": self.input_index,
            "time": None if self.time is None else self.time.isoformat(),
            "label": self.label,
            "confidence": self.confidence,
            "ood_score": self.ood_score,
            "true_label": self.true_label,
        }


def most_out_of_distribution(
    scores: np.ndarray | None,
    threshold: float,
    probabilities: np.ndarray,
    labels: Sequence[str],
    request_ids: Sequence[str],
    input_indices: Sequence[int],
    timestamps: Sequence[datetime] = (),
    true_labels: Sequence[str | None] | None = None,
    limit: int = LISTED,
) -> list[FlaggedInput]:
    """The flagged inputs with the highest scores, highest first (newest first among equals).

    Args:
        scores: (N,) the window's OOD scores (NaN: left out), or None when there are none.
        threshold: the profile's OOD threshold; only inputs above it are listed.
        probabilities: (N, K) the model's probabilities, in the order of `labels`.
        labels: the bundle's labels.
        request_ids: (N,) the request of each input; nothing is listed without them.
        input_indices: (N,) each input's position in its request.
        timestamps: (N,) when each was predicted (may be empty).
        true_labels: (N,) the feedback label of each, None where none came back.
        limit: list at most this many.
    """
    n = len(request_ids)
    if scores is None or not n or len(input_indices) != n or len(scores) != n:
        return []
    values = np.asarray(scores, dtype=np.float64)
    flagged = np.flatnonzero(np.isfinite(values) & (values > threshold))
    # Highest score first; among equal scores the newest (the window is oldest first).
    order = flagged[np.lexsort((-flagged, -values[flagged]))][:limit]
    top = np.asarray(probabilities, dtype=np.float64)
    return [
        FlaggedInput(
            request_id=request_ids[i],
            input_index=int(input_indices[i]),
            time=timestamps[i] if len(timestamps) else None,
            label=labels[int(np.argmax(top[i]))],
            confidence=float(np.max(top[i])),
            ood_score=float(values[i]),
            true_label=None if true_labels is None else true_labels[i],
        )
        for i in order
    ]


def flagged_text(item: FlaggedInput) -> str:
    """`request 3f2a input 0 (score 41.2, predicted 7 at 0.81, true 1)`: one input, with its
    true label where it came back."""
    true = "" if item.true_label is None else f", true {item.true_label}"
    return (
        f"request {item.request_id} input {item.input_index} (score {item.ood_score:.4g}, "
        f"predicted {item.label} at {item.confidence:.2f}{true})"
    )


def flagged_lines(inputs: Sequence[FlaggedInput]) -> list[str]:
    """The first `SHOWN` inputs, a line each, then how many more the report lists; nothing
    when no input is flagged."""
    lines = [f"  {flagged_text(item)}" for item in inputs[:SHOWN]]
    if len(inputs) > SHOWN:
        lines.append(f"  and {len(inputs) - SHOWN} more (--json, --html)")
    return lines
