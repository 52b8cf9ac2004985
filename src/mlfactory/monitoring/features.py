"""Input summaries (one dict per logged input) as columns that a drift test can compare.

The serving input summary (`mlfactory.serving.input_summary`) holds, per modality:

- image: bytes, width, height, format, brightness_mean, brightness_std;
- text: bytes, chars, tokens, truncated;
- audio: bytes, duration_s, sample_rate, channels, mean_db.

`format`, `truncated`, `sample_rate` and `channels` are categorical: they take a handful of
values, and a change of their mix (JPEG instead of PNG, 44.1 kHz instead of 16 kHz) is what
matters, not their order, so they get a chi-square test. Any other string or boolean value is
categorical too; every other number is numeric and gets a two-sample Kolmogorov-Smirnov test.
A summary that lacks a key (summaries are best effort) counts as missing: NaN for a numeric
column, the category `MISSING` for a categorical one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CATEGORICAL_FEATURES = frozenset({"format", "truncated", "sample_rate", "channels"})
MISSING = "(missing)"


@dataclass
class SummaryColumns:
    """Input summaries as columns.

    Attributes:
        numeric: name -> (N,) float64, NaN where missing.
        categorical: name -> (N,) strings, `MISSING` where missing.
    """

    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    categorical: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        for column in [*self.numeric.values(), *self.categorical.values()]:
            return len(column)
        return 0

    def subset(self, rows: np.ndarray) -> SummaryColumns:
        """The same columns restricted to `rows` (indices or a mask)."""
        return SummaryColumns(
            {name: values[rows] for name, values in self.numeric.items()},
            {name: values[rows] for name, values in self.categorical.items()},
        )


def feature_kinds(summaries: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Each key seen in the summaries -> "numeric" or "categorical" (see the module docstring)."""
    kinds: dict[str, str] = {}
    for summary in summaries:
        for key, value in summary.items():
            if value is None or kinds.get(key) == "categorical":
                continue
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            categorical = key in CATEGORICAL_FEATURES or not is_number
            kinds[key] = "categorical" if categorical else "numeric"
    return dict(sorted(kinds.items()))


def summary_columns(
    summaries: Sequence[Mapping[str, Any]], kinds: Mapping[str, str]
) -> SummaryColumns:
    """The summaries as one column per feature named in `kinds` (other keys are ignored)."""
    columns = SummaryColumns()
    for name, kind in kinds.items():
        values = [summary.get(name) for summary in summaries]
        if kind == "numeric":
            columns.numeric[name] = np.array([_number(value) for value in values], dtype=np.float64)
        else:
            columns.categorical[name] = np.array(
                [MISSING if value is None else str(value) for value in values], dtype=np.str_
            )
    return columns


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return float("nan")
