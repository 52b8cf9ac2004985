"""What `mlfactory predict` streams: an input to read, an input skipped, a prediction made.

`batch_predict` makes them and `batch_results` writes them; both import them from here (and
`batch_predict` re-exports them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Input", "Prediction", "Skipped"]


@dataclass(frozen=True)
class Input:
    """One input to predict: its name in the results and how to read its bytes."""

    id: str
    read: Callable[[], bytes]


@dataclass
class Skipped:
    """An input that was not predicted, and why."""

    id: str
    reason: str


@dataclass
class Prediction:
    """One result row: the input, the label, its score and every label's probability.

    `to_row` is what the results file holds; monitoring adds its OOD flag as another key
    between `score` and the probabilities.
    """

    input: str
    label: str
    score: float
    probabilities: dict[str, float]

    def to_row(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "label": self.label,
            "score": self.score,
            "probabilities": self.probabilities,
        }
