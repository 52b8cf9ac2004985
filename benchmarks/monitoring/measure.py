"""The measurements of the monitoring benchmark, for one bundle: OOD, accuracy, drift, time.

Every figure compares like with like in the same run: the OOD score against the maximum softmax
probability on the same inputs, the estimated accuracy against the mean raw confidence on the
same pools, and mlfactory's drift checks against Evidently's defaults on the very same windows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from benchmarks.monitoring import evidently_side
from benchmarks.monitoring.outputs import Outputs
from benchmarks.monitoring.pools import Pool
from sklearn.metrics import roc_auc_score

from mlfactory.monitoring.accuracy import estimated_accuracy
from mlfactory.monitoring.features import feature_kinds
from mlfactory.monitoring.profile import ReferenceProfile, label_indices
from mlfactory.monitoring.report import MonitorSettings, check_window

SIZES = (50, 100, 200, 500)
STRICT_LEVEL = 0.01


@dataclass
class DriftCell:
    """One condition at one window size: how often each side said "drift"."""

    pool: str
    kind: str
    subtle: bool
    size: int
    windows: int
    ours: float
    ours_strict: float
    evidently: float
    evidently_windows: int
    ours_seconds: float
    evidently_seconds: float
    checks_fired: dict[str, float] = field(default_factory=dict)
    evidently_parts: dict[str, float] = field(default_factory=dict)
    # The estimated accuracy's 95 % interval on the same windows: the share of windows whose
    # true accuracy it contains, and its mean width; "normal": the first release's interval
    # (the window's share with the plain binomial variance), for comparison.
    accuracy_coverage: float = float("nan")
    accuracy_width: float = float("nan")
    accuracy_coverage_normal: float = float("nan")
    # Per window, mlfactory's smallest raw p-value times the number of checks tested (inf when
    # none was): Holm finds drift at level a when it is at most a. Unlike the corrected p-value
    # it is not cut at 1, so looser rules than any level can be read back too (matched_alarms).
    holm_statistics: list[float] = field(default_factory=list)


def ood_rows(
    profile: ReferenceProfile, unseen: Outputs, pools: list[tuple[Pool, Outputs]]
) -> list[dict[str, Any]]:
    """AUROC of the OOD score and of the max softmax probability, unseen vs each shifted pool."""
    inside = profile.ood.score(unseen.embeddings, unseen.early)
    rows = [
        {
            "pool": "unseen (in distribution)",
            "flagged": float(np.mean(inside > profile.ood.threshold)),
        }
    ]
    for pool, out in pools:
        if pool.kind in ("label-prior", "none", "reference", "mixture"):
            continue
        outside = profile.ood.score(out.embeddings, out.early)
        rows.append(
            {
                "pool": pool.name,
                "ood": pool.ood or "covariate",
                "auroc": _auroc(inside, outside),
                "auroc_msp": _auroc(
                    -unseen.probabilities.max(axis=1), -out.probabilities.max(axis=1)
                ),
                "flagged": float(np.mean(outside > profile.ood.threshold)),
            }
        )
    return rows


def accuracy_rows(
    profile: ReferenceProfile, pools: list[tuple[Pool, Outputs]]
) -> list[dict[str, Any]]:
    """True accuracy of each pool next to the estimate (ATC), CBPE and the mean raw confidence."""
    rows = []
    for pool, out in pools:
        if pool.kind == "reference":
            continue
        true = label_indices([label or "" for label in out.labels], profile.labels)
        accuracy = float(np.mean(out.probabilities.argmax(axis=1) == true))
        estimate = estimated_accuracy(out.probabilities, profile.temperature, profile.accuracy)
        cbpe = estimated_accuracy(out.probabilities, profile.temperature).value or 0.0
        confidence = float(out.probabilities.max(axis=1).mean())
        rows.append(
            {
                "pool": pool.name,
                "n": len(out),
                "accuracy": accuracy,
                "estimated": estimate.value,
                "ci": [estimate.low, estimate.high],
                "confidence": confidence,
                "cbpe": cbpe,
                "cbpe_error": abs(cbpe - accuracy),
                "error": abs((estimate.value or 0.0) - accuracy),
                "confidence_error": abs(confidence - accuracy),
            }
        )
    return rows


def drift_cells(
    profile: ReferenceProfile,
    reference: Outputs,
    pools: list[tuple[Pool, Outputs]],
    windows: tuple[int, int],
    evidently_windows: tuple[int, int],
    sizes: tuple[int, ...] = SIZES,
) -> list[DriftCell]:
    """Drift verdicts of both sides on the same random windows of every pool and size.

    `windows` and `evidently_windows` are (no-shift, per shift) counts; Evidently checks the
    first of the windows mlfactory checks.
    """
    kinds = feature_kinds(reference.summaries)
    reference_frame = evidently_side.frame(reference, kinds)
    cells = []
    for index, (pool, out) in enumerate(pools):
        if pool.kind == "reference":
            continue
        pick = 0 if pool.kind == "none" else 1
        count, theirs = windows[pick], evidently_windows[pick]
        for size in sizes:
            rng = np.random.default_rng([index, size])
            cells.append(
                _cell(profile, reference_frame, kinds, pool, out, size, count, theirs, rng)
            )
            cell = cells[-1]
            print(
                f"    {pool.name:28s} n={size:<4d} ours {cell.ours:5.3f} ({cell.windows})  "
                f"evidently {cell.evidently:5.3f} ({cell.evidently_windows})",
                flush=True,
            )
    return cells


def _cell(
    profile: ReferenceProfile,
    reference_frame: Any,
    kinds: dict[str, str],
    pool: Pool,
    out: Outputs,
    size: int,
    count: int,
    evidently_windows: int,
    rng: np.random.Generator,
) -> DriftCell:
    ours, strict, ours_time, fired, holm = [], [], [], {}, []
    covered, widths, covered_normal = [], [], []
    truth = label_indices([label or "" for label in out.labels], profile.labels)
    right = out.probabilities.argmax(axis=1) == truth
    evidently, evidently_time, parts = [], [], {"features": 0.0, "embedding": 0.0}
    for window_index in range(count):
        rows = rng.choice(len(out), size, replace=len(out) < size)
        window = out.rows(rows)
        settings = MonitorSettings(seed=window_index)
        started = time.perf_counter()
        logged = window.logged()
        report = check_window(profile, logged, {}, settings)
        ours_time.append(time.perf_counter() - started)
        ours.append(report.drift)
        raw = [check.p_value_raw for check in report.checks if check.p_value_raw is not None]
        holm.append(len(raw) * min(raw) if raw else float("inf"))
        assert report.drift == (holm[-1] <= settings.level)  # Holm's first step decides
        # Checked again at the stricter level: it draws more permutations (drift.resamples_for).
        strict_settings = MonitorSettings(seed=window_index, level=STRICT_LEVEL)
        strict.append(check_window(profile, logged, {}, strict_settings).drift)
        for check in report.checks:
            fired[check.name] = fired.get(check.name, 0.0) + check.drift / count
        estimate, accuracy = report.estimated, float(np.mean(right[rows]))
        if estimate.low is not None and estimate.high is not None:
            covered.append(estimate.low <= accuracy <= estimate.high)
            widths.append(estimate.high - estimate.low)
            low, high = _normal_interval(estimate.value or 0.0, size, profile)
            covered_normal.append(low <= accuracy <= high)
        if window_index < evidently_windows:
            frame = evidently_side.frame(window, kinds)
            if window_index == 0:
                evidently_side.check_same_as_evidently(reference_frame, frame)
            started = time.perf_counter()
            verdict = evidently_side.verdict(reference_frame, frame, kinds)
            evidently_time.append(time.perf_counter() - started)
            evidently.append(verdict.drift)
            parts["features"] += verdict.features
            parts["embedding"] += verdict.embedding
    done = max(len(evidently), 1)
    return DriftCell(
        pool=pool.name,
        kind=pool.kind,
        subtle=pool.subtle,
        size=size,
        windows=count,
        ours=float(np.mean(ours)),
        ours_strict=float(np.mean(strict)),
        evidently=float(np.mean(evidently)) if evidently else float("nan"),
        evidently_windows=len(evidently),
        ours_seconds=float(np.mean(ours_time)),
        evidently_seconds=float(np.mean(evidently_time)) if evidently_time else float("nan"),
        checks_fired=fired,
        evidently_parts={key: value / done for key, value in parts.items()},
        accuracy_coverage=float(np.mean(covered)) if covered else float("nan"),
        accuracy_width=float(np.mean(widths)) if widths else float("nan"),
        accuracy_coverage_normal=float(np.mean(covered_normal)) if covered else float("nan"),
        holm_statistics=holm,
    )


def _normal_interval(value: float, n: int, profile: ReferenceProfile) -> tuple[float, float]:
    """The first release's interval of the ATC estimate: the window's share with the plain
    binomial variance p(1 - p) / n, which vanishes for a share of 0 or 1."""
    threshold = profile.accuracy
    if threshold is None:
        return float("nan"), float("nan")
    fitted = threshold.reference_accuracy
    variance = value * (1 - value) / n + fitted * (1 - fitted) / threshold.n_reference
    spread = 1.959964 * float(np.sqrt(variance))
    return max(0.0, value - spread), min(1.0, value + spread)


def timing(
    profile: ReferenceProfile, reference: Outputs, unseen: Outputs, reports: int
) -> dict[str, Any]:
    """Seconds per check: ours at 200 and at 10,000 rows; Evidently's full Report at 200."""
    rng = np.random.default_rng(0)
    kinds = feature_kinds(reference.summaries)
    result: dict[str, Any] = {}
    big = unseen.rows(rng.choice(len(unseen), 10_000, replace=True))
    started = time.perf_counter()
    check_window(
        profile,
        big.logged(),
        {},
    )
    result["ours_10000_s"] = time.perf_counter() - started
    reference_frame = evidently_side.frame(reference, kinds)
    seconds = []
    for _ in range(reports):
        window = unseen.rows(rng.choice(len(unseen), 200, replace=False))
        spent, _ = evidently_side.full_report(
            reference_frame, evidently_side.frame(window, kinds), kinds
        )
        seconds.append(spent)
    result["evidently_report_200_s"] = float(np.mean(seconds)) if seconds else None
    result["evidently_reports"] = len(seconds)
    return result


def _auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    truth = np.concatenate([np.zeros(len(inside)), np.ones(len(outside))])
    return float(roc_auc_score(truth, np.concatenate([inside, outside])))
