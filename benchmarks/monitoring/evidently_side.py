"""Evidently's defaults on the same windows: DataDriftPreset on the input summary features and
EmbeddingsDrift on the embedding (evidently 0.7.23, `DO_NOT_TRACK=1`).

The verdicts over hundreds of windows come from the very functions Evidently's report calls,
without the report around them: per column `get_stattest(...)` (Evidently's default test for the
column type and sample size) at its default threshold, the dataset verdict at Evidently's
default drift share (0.5 of the columns), and for the embedding Evidently's default method,
`model(bootstrap=reference < 1000)`. With bootstrap, that method compares the classifier's
ROC AUC with the 95th percentile of 100 AUCs of seeded random scores on the same held-out
labels; those labels depend only on the two sample sizes (a seeded split), so the percentile is
computed once per size here (with Evidently's own `calc_roc_auc_random`) instead of per window,
and `check_same_as_evidently` proves on real windows that the verdicts are Evidently's own.
`full_report` runs the real `Report` on a window; the benchmark times it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

os.environ.setdefault("DO_NOT_TRACK", "1")

import numpy as np
import pandas as pd
from benchmarks.monitoring.outputs import Outputs
from evidently import DataDefinition, Dataset, Report
from evidently.legacy.calculations.stattests.registry import get_stattest
from evidently.legacy.core import ColumnType
from evidently.legacy.metrics.data_drift.embedding_drift_methods import (
    calc_roc_auc_random,
    model,
)
from evidently.metrics import EmbeddingsDrift
from evidently.presets import DataDriftPreset
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

DRIFT_SHARE = 0.5
EMBEDDING = "embedding"


@dataclass
class EvidentlyVerdict:
    """Evidently's answer for one window."""

    features: bool
    embedding: bool
    drifted_columns: int
    columns: int

    @property
    def drift(self) -> bool:
        return self.features or self.embedding


def frame(outputs: Outputs, kinds: dict[str, str]) -> pd.DataFrame:
    """The summary features (typed as monitoring types them) and the embedding columns."""
    data: dict[str, object] = {}
    for name, kind in kinds.items():
        values = [summary.get(name) for summary in outputs.summaries]
        data[name] = (
            pd.Series(values, dtype="float64")
            if kind == "numeric"
            else pd.Series([str(v) for v in values], dtype="object")
        )
    embedding = pd.DataFrame(
        outputs.embeddings, columns=[f"e{i}" for i in range(outputs.embeddings.shape[1])]
    )
    return pd.concat([pd.DataFrame(data), embedding], axis=1)


def verdict(
    reference: pd.DataFrame, window: pd.DataFrame, kinds: dict[str, str]
) -> EvidentlyVerdict:
    """Evidently's default verdicts, from the functions its report calls."""
    drifted = 0
    for name, kind in kinds.items():
        column_type = ColumnType.Numerical if kind == "numeric" else ColumnType.Categorical
        ref = reference[name].replace([-np.inf, np.inf], np.nan).dropna()
        cur = window[name].replace([-np.inf, np.inf], np.nan).dropna()
        test = get_stattest(ref, cur, column_type, None)
        drifted += bool(test(ref, cur, column_type, None).drifted)
    embedding_drift = embedding_verdict(reference, window)
    return EvidentlyVerdict(
        features=drifted / max(len(kinds), 1) >= DRIFT_SHARE,
        embedding=bool(embedding_drift),
        drifted_columns=drifted,
        columns=len(kinds),
    )


def embedding_verdict(reference: pd.DataFrame, window: pd.DataFrame) -> bool:
    """Evidently's default embedding drift verdict (`model()`), the bootstrap cached per size."""
    columns = _embedding_columns(reference)
    if reference.shape[0] >= 1000:  # Evidently's default: no bootstrap, AUC above 0.55
        return bool(model(bootstrap=False)(window[columns].copy(), reference[columns].copy())[1])
    data = pd.concat([reference[columns], window[columns]])
    target = pd.Series([1] * len(reference) + [0] * len(window), index=data.index)
    x_train, x_test, y_train, y_test = train_test_split(
        data, target, test_size=0.5, random_state=42, shuffle=True
    )
    clf = SGDClassifier(loss="log_loss", random_state=42)
    clf.fit(x_train, y_train)
    auc = roc_auc_score(y_test, clf.predict_proba(x_test)[:, 1])
    return bool(auc > _random_auc_percentile(len(reference), len(window), y_test))


_PERCENTILES: dict[tuple[int, int], float] = {}


def _random_auc_percentile(n_reference: int, n_window: int, y_test: pd.Series) -> float:
    key = (n_reference, n_window)
    if key not in _PERCENTILES:
        _PERCENTILES[key] = float(
            np.percentile([calc_roc_auc_random(y_test, i) for i in range(100)], 95)
        )
    return _PERCENTILES[key]


def check_same_as_evidently(reference: pd.DataFrame, window: pd.DataFrame) -> None:
    """Raise unless `embedding_verdict` equals Evidently's own default method on this window."""
    columns = _embedding_columns(reference)
    method = model(bootstrap=reference.shape[0] < 1000)
    _, expected, _ = method(window[columns].copy(), reference[columns].copy())
    if bool(expected) != embedding_verdict(reference, window):
        raise AssertionError("the cached embedding verdict differs from Evidently's own")


def full_report(
    reference: pd.DataFrame, window: pd.DataFrame, kinds: dict[str, str]
) -> tuple[float, dict[str, object]]:
    """Run Evidently's Report (DataDriftPreset + EmbeddingsDrift); (seconds, its result dict)."""
    definition = DataDefinition(
        numerical_columns=[k for k, v in kinds.items() if v == "numeric"],
        categorical_columns=[k for k, v in kinds.items() if v == "categorical"],
        embeddings={EMBEDDING: _embedding_columns(reference)},
    )
    started = time.perf_counter()
    ref = Dataset.from_pandas(reference, data_definition=definition)
    cur = Dataset.from_pandas(window, data_definition=definition)
    report = Report(
        [DataDriftPreset(columns=list(kinds)), EmbeddingsDrift(embeddings_name=EMBEDDING)]
    )
    snapshot = report.run(cur, ref)
    result = snapshot.dict()
    return time.perf_counter() - started, result


def _embedding_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("e") and c[1:].isdigit()]
