"""The report's view per label: which labels the window predicts more or less often than the
reference, and, where true labels came back, how often each true label was predicted right.

The predicted-label check says whether the label mix moved; this says which labels moved it.
Live accuracy by true label (the label's recall) says which classes the model gets wrong now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# The text names at most this many labels (the JSON has every label).
SHOWN = 3


@dataclass(frozen=True)
class LabelRow:
    """One label of the window against the reference.

    Attributes:
        label: the label.
        reference_share: the share of the reference's inputs predicted as it.
        window_share: the share of the window's inputs predicted as it (None: empty window).
        labelled: the window's inputs whose true label (feedback) is this label.
        live: the share of those predicted right (None when none is labelled).
    """

    label: str
    reference_share: float
    window_share: float | None
    labelled: int
    live: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def label_rows(
    labels: Sequence[str],
    reference_predicted: np.ndarray,
    predicted: np.ndarray,
    true: np.ndarray,
) -> list[LabelRow]:
    """Every label's row, in the bundle's label order.

    Args:
        labels: the bundle's labels.
        reference_predicted: (R,) the reference's predicted class indices.
        predicted: (N,) the window's predicted class indices.
        true: (N,) the window's true class indices, negative where no label came back.
    """
    k = len(labels)
    reference = np.bincount(np.asarray(reference_predicted, np.int64), minlength=k)
    window = np.bincount(np.asarray(predicted, np.int64), minlength=k)
    true = np.asarray(true, np.int64)
    labelled = true >= 0
    counts = np.bincount(true[labelled], minlength=k)
    right = np.bincount(true[labelled & (np.asarray(predicted) == true)], minlength=k)
    n = len(predicted)
    return [
        LabelRow(
            label=label,
            reference_share=float(reference[i] / max(reference.sum(), 1)),
            window_share=float(window[i] / n) if n else None,
            labelled=int(counts[i]),
            live=float(right[i] / counts[i]) if counts[i] else None,
        )
        for i, label in enumerate(labels)
    ]


def moved_text(rows: Sequence[LabelRow]) -> str | None:
    """`7 31% (reference 10%), 1 2% (11%)`: the labels whose predicted share moved most, or
    None for an empty window."""
    present = [row for row in rows if row.window_share is not None]
    if not present:
        return None
    ranked = sorted(present, key=lambda r: -abs((r.window_share or 0.0) - r.reference_share))
    parts = [
        f"{row.label} {row.window_share:.0%} ({'reference ' if i == 0 else ''}"
        f"{row.reference_share:.0%})"
        for i, row in enumerate(ranked[:SHOWN])
    ]
    return ", ".join(parts)


def weakest_text(rows: Sequence[LabelRow]) -> str | None:
    """`8 0.520 on 25, 3 0.800 on 20`: the true labels predicted right least often, or None
    when no true label came back."""
    labelled = [row for row in rows if row.live is not None]
    if not labelled:
        return None
    ranked = sorted(labelled, key=lambda row: (row.live, -row.labelled))
    return ", ".join(f"{row.label} {row.live:.3f} on {row.labelled:,}" for row in ranked[:SHOWN])
