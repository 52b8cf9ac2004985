"""The reference profile: what monitoring compares live traffic with, stored in the bundle.

It is built from data the model did not train on (normally the validation split) and holds:

- the out-of-distribution scorer (class means, a within-class basis, the calibrated threshold
  and where its rate lies 9 times in 10; the same for the early features of a convolutional
  model, and how the two scores add up);
- the drift reference sample: the embedding projected on at most 32 principal directions (the
  basis is stored too), the predicted label, the confidence and the input-summary features;
- the temperature that calibrates the probabilities, and the calibrated-confidence thresholds
  of the estimated accuracy (ATC: the whole reference's, and those of 200 bootstrap resamples
  of it; see `accuracy.py`).

On disk it is two files in the bundle folder: `profile.npz` (arrays only, read with
`allow_pickle=False`, so loading a profile can never run code) and `profile.json` (scalars,
labels, feature kinds, provenance).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mlfactory.errors import BundleError
from mlfactory.monitoring.accuracy import ConfidenceThreshold, calibrate, fit_temperature
from mlfactory.monitoring.blas import on_one_thread
from mlfactory.monitoring.features import SummaryColumns, feature_kinds, summary_columns
from mlfactory.monitoring.ood import DEFAULT_DIMS, DEFAULT_FPR, OodScorer
from mlfactory.monitoring.projection import Projection

FORMAT_VERSION = 1
ARRAYS_FILE = "profile.npz"
META_FILE = "profile.json"
DRIFT_DIMS = 32
# Reference rows kept for the drift tests; more add little power and grow the bundle.
MAX_REFERENCE = 5000
MIN_REFERENCE = 20
VALIDATION = "validation split"  # the reference's `source` when export writes it
VALIDATION_AND_TEST = "validation and test splits"  # a small validation split, or --with-test
# How to get a profile for a bundle that has none or an unusable one (no training needed).
REWRITE = "`mlfactory profile BUNDLE` writes a new one from its recipe's data, without training"


@dataclass
class DriftReference:
    """The reference sample the drift checks compare a window with.

    Attributes:
        projection: the embedding's leading principal directions (at most `DRIFT_DIMS`).
        embeddings: (m, k) the reference rows the basis was not fitted on, projected on it.
        predicted: (n,) predicted class indices.
        confidence: (n,) top probabilities (raw, as served).
        features: the input-summary columns.
        kinds: feature name -> "numeric" or "categorical".
    """

    projection: Projection
    embeddings: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    features: SummaryColumns
    kinds: dict[str, str]


@dataclass
class ReferenceProfile:
    """Everything monitoring needs about the reference data; see the module docstring.

    Attributes:
        labels: the bundle's labels, in output order.
        ood: the out-of-distribution scorer.
        drift: the drift reference sample.
        temperature: the probability calibration of the estimated accuracy.
        meta: provenance and summary figures (source, sizes, reference accuracy, time).
        accuracy: the estimated accuracy's threshold (None in profiles written before it was
            stored: they estimate with the mean calibrated confidence).
    """

    labels: list[str]
    ood: OodScorer
    drift: DriftReference
    temperature: float
    meta: dict[str, Any] = field(default_factory=dict)
    accuracy: ConfidenceThreshold | None = None

    def save(self, folder: str | Path) -> Path:
        """Write `profile.npz` and `profile.json` into `folder`; returns the npz path."""
        target = Path(folder)
        arrays = {
            "ood.class_means": self.ood.class_means,
            "ood.basis": self.ood.projection.basis,
            "ood.variances": self.ood.projection.variances,
            "ood.calibration_scores": self.ood.calibration_scores,
            **_early_arrays(self.ood),
            "drift.mean": self.drift.projection.mean,
            "drift.basis": self.drift.projection.basis,
            "drift.variances": self.drift.projection.variances,
            "drift.embeddings": self.drift.embeddings,
            "drift.predicted": self.drift.predicted,
            "drift.confidence": self.drift.confidence,
            **{f"numeric.{k}": v for k, v in self.drift.features.numeric.items()},
            **{f"categorical.{k}": v for k, v in self.drift.features.categorical.items()},
        }
        # Each file is written whole under another name, then renamed: a server that loads the
        # bundle meanwhile (`mlfactory profile` on a served folder) never reads half a file.
        npz, partial = target / ARRAYS_FILE, target / f"{ARRAYS_FILE}.tmp"
        with open(partial, "wb") as handle:  # np.savez would append ".npz" to the name
            np.savez_compressed(handle, allow_pickle=False, **arrays)
        partial.replace(npz)
        self.save_meta(target)
        return npz

    def save_meta(self, folder: str | Path) -> None:
        """Write `profile.json` alone into `folder` (the arrays unchanged), whole, then renamed."""
        rate_low, rate_high = self.ood.rate_range(0.9)  # where this profile's own rate lies
        meta = {
            "format_version": FORMAT_VERSION,
            "labels": self.labels,
            "temperature": self.temperature,
            **({"accuracy": self.accuracy.to_json()} if self.accuracy is not None else {}),
            "ood": {
                "method": "mahalanobis",
                "threshold": self.ood.threshold,
                "fpr": self.ood.fpr,
                "expected_rate": self.ood.expected_rate,
                "rate_low_90": rate_low,
                "rate_high_90": rate_high,
                "normalize": self.ood.normalize,
                "residual_variance": self.ood.projection.residual_variance,
                **({"float64": True} if self.ood.float64 else {}),
                **_early_meta(self.ood),
            },
            "drift": {
                "residual_variance": self.drift.projection.residual_variance,
                "features": self.drift.kinds,
            },
            **self.meta,
        }
        partial = Path(folder) / f"{META_FILE}.tmp"
        partial.write_text(json.dumps(meta, indent=2) + "\n")
        partial.replace(partial.with_name(META_FILE))


@on_one_thread
def build_profile(
    embeddings: np.ndarray,
    probabilities: np.ndarray,
    labels_true: Sequence[str] | np.ndarray,
    summaries: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    *,
    source: str = VALIDATION,
    fpr: float = DEFAULT_FPR,
    ood_dims: int = DEFAULT_DIMS,
    drift_dims: int = DRIFT_DIMS,
    normalize: bool = True,
    max_reference: int = MAX_REFERENCE,
    seed: int = 0,
    early_features: np.ndarray | None = None,
) -> ReferenceProfile:
    """Build the reference profile from model outputs on data the model did not train on.

    Args:
        embeddings: (N, D) the bundle's `embedding` output for the reference inputs.
        probabilities: (N, K) its `probabilities` output.
        labels_true: (N,) the true labels (label strings, or class indices).
        summaries: (N,) the serving input summary of each input.
        labels: the bundle's labels, in output order.
        source: where the reference data came from (kept in `profile.json`).
        fpr: the false-positive rate the OOD threshold is calibrated to.
        ood_dims: within-class directions the OOD score models one by one.
        drift_dims: principal directions of the drift reference embedding.
        normalize: scale embeddings to unit length for the OOD score.
        max_reference: reference rows kept for drift (a seeded random subset beyond).
        seed: seeds the calibration folds and the subset.
        early_features: (N, E) the bundle's `early_features` output, when it has one: the OOD
            score then reads it too (`OodScorer.fit`).

    Raises:
        ValueError: the inputs disagree in length, a true label is not one of `labels`, or
            there are fewer than 20 inputs.
    """
    x, p, y = _reference_arrays(embeddings, probabilities, labels_true, summaries, labels)
    temperature = fit_temperature(p, y)
    drift, keep, sample_rows = _drift_reference(
        x, p, summaries, np.random.default_rng(seed), max_reference, drift_dims
    )
    predicted = p.argmax(axis=1)
    meta = {
        "source": source,
        "n_reference": len(x),
        "n_drift_reference": len(keep),
        "n_embedding_reference": len(sample_rows),
        "embedding_dim": int(x.shape[1]),
        "reference_accuracy": float(np.mean(predicted == y)),
        "reference_confidence": float(p.max(axis=1).mean()),
        "reference_calibrated_confidence": float(calibrate(p, temperature).max(axis=1).mean()),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if early_features is not None:
        if len(early_features) != len(x):
            raise ValueError(
                f"reference arrays differ in length: {len(x)} embeddings, "
                f"{len(early_features)} early features"
            )
        meta["early_features_dim"] = int(np.shape(early_features)[1])
    ood = OodScorer.fit(
        x,
        y,
        fpr=fpr,
        dims=ood_dims,
        normalize=normalize,
        seed=seed,
        early_features=None if early_features is None else np.asarray(early_features, np.float32),
    )
    accuracy = ConfidenceThreshold.fit(calibrate(p, temperature).max(axis=1), predicted == y)
    return ReferenceProfile(list(labels), ood, drift, temperature, meta, accuracy)


def _reference_arrays(
    embeddings: np.ndarray,
    probabilities: np.ndarray,
    labels_true: Sequence[str] | np.ndarray,
    summaries: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The embeddings and probabilities as float32 and the true labels as indices, checked."""
    x = np.asarray(embeddings, dtype=np.float32)
    p = np.asarray(probabilities, dtype=np.float32)
    y = label_indices(labels_true, labels)
    if not len(x) == len(p) == len(y) == len(summaries):
        raise ValueError(
            f"reference arrays differ in length: {len(x)} embeddings, {len(p)} probabilities, "
            f"{len(y)} labels, {len(summaries)} summaries"
        )
    unknown = sorted({str(v) for v, i in zip(np.asarray(labels_true), y, strict=True) if i < 0})
    if unknown:
        raise ValueError(f"reference labels not among the bundle's labels: {', '.join(unknown)}")
    if len(x) < MIN_REFERENCE:
        raise ValueError(f"a reference profile needs at least {MIN_REFERENCE} inputs, got {len(x)}")
    return x, p, y


def _drift_reference(
    x: np.ndarray,
    p: np.ndarray,
    summaries: Sequence[Mapping[str, Any]],
    rng: np.random.Generator,
    max_reference: int,
    drift_dims: int,
) -> tuple[DriftReference, np.ndarray, np.ndarray]:
    """The drift checks' reference sample, the rows it keeps, and those of its embedding."""
    keep = np.arange(len(x))
    if len(x) > max_reference:
        keep = np.sort(rng.choice(len(x), max_reference, replace=False))
    # The embedding's basis is fitted on a third of the rows and the other two thirds are the
    # reference sample: projected on a basis fitted on themselves, the reference rows would
    # spread less along the last directions than any new input does (a false alarm).
    shuffled, third = rng.permutation(keep), len(keep) // 3
    basis_rows, sample_rows = np.sort(shuffled[:third]), np.sort(shuffled[third:])
    kinds = feature_kinds(summaries)
    projection = Projection.fit(x[basis_rows], min(drift_dims, len(basis_rows) - 1))
    drift = DriftReference(
        projection=projection,
        embeddings=projection.transform(x[sample_rows]),
        predicted=p[keep].argmax(axis=1).astype(np.int32),
        confidence=p[keep].max(axis=1),
        features=summary_columns([summaries[int(i)] for i in keep], kinds),
        kinds=kinds,
    )
    return drift, keep, sample_rows


def load_profile(folder: str | Path) -> ReferenceProfile | None:
    """The profile saved in a bundle folder, or None when the bundle has none.

    Raises:
        BundleError: the profile files are incomplete, malformed or from a newer mlfactory.
    """
    target = Path(folder)
    npz, meta_path = target / ARRAYS_FILE, target / META_FILE
    if not npz.is_file() and not meta_path.is_file():
        return None
    if npz.is_file() and not zipfile.is_zipfile(npz):  # numpy would talk of pickled data
        raise BundleError(
            f"the monitoring profile in {target} cannot be read ({npz.name} is not an npz "
            f"archive of arrays); {REWRITE}"
        )
    try:
        meta = json.loads(meta_path.read_text())
        with np.load(npz, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        return _from_saved(meta, arrays)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(
            f"the monitoring profile in {target} cannot be read ({type(exc).__name__}: {exc}); "
            f"{REWRITE}"
        ) from None


def missing_profile_message(name: str, version: str) -> str:
    """The one line that says a bundle has no profile, and how to get one."""
    return (
        f"bundle {name} {version} has no monitoring profile (profile.npz): it was exported "
        f"before monitoring existed, from fewer than {MIN_REFERENCE} validation items, or its "
        f"profile files were removed; {REWRITE}"
    )


def label_indices(values: Sequence[str] | np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Label strings (or class indices) -> class indices; an unknown label is -1."""
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index.get(str(value), -1) for value in array], dtype=np.int64)


def _from_saved(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> ReferenceProfile:
    version = int(meta["format_version"])
    if version > FORMAT_VERSION:
        raise ValueError(f"profile format {version} is newer than {FORMAT_VERSION}")
    ood_meta, drift_meta = meta["ood"], meta["drift"]
    early = None
    if "early" in ood_meta:
        early = OodScorer(
            class_means=arrays["ood.early.class_means"],
            projection=_ood_projection(arrays, "ood.early", ood_meta["early"]),
            normalize=bool(ood_meta["normalize"]),
            float64=bool(ood_meta["early"].get("float64", False)),
        )
    ood = OodScorer(
        class_means=arrays["ood.class_means"],
        projection=_ood_projection(arrays, "ood", ood_meta),
        threshold=float(ood_meta["threshold"]),
        fpr=float(ood_meta["fpr"]),
        normalize=bool(ood_meta["normalize"]),
        calibration_scores=arrays["ood.calibration_scores"],
        early=early,
        float64=bool(ood_meta.get("float64", False)),
        standardization=np.asarray(ood_meta.get("standardization", []), np.float64),
    )
    kinds: dict[str, str] = dict(drift_meta["features"])
    features = SummaryColumns(
        {k: arrays[f"numeric.{k}"] for k, kind in kinds.items() if kind == "numeric"},
        {k: arrays[f"categorical.{k}"] for k, kind in kinds.items() if kind == "categorical"},
    )
    drift = DriftReference(
        projection=Projection(
            arrays["drift.mean"],
            arrays["drift.basis"],
            arrays["drift.variances"],
            float(drift_meta["residual_variance"]),
        ),
        embeddings=arrays["drift.embeddings"],
        predicted=arrays["drift.predicted"],
        confidence=arrays["drift.confidence"],
        features=features,
        kinds=kinds,
    )
    known = {"format_version", "labels", "temperature", "accuracy", "ood", "drift"}
    rest = {key: value for key, value in meta.items() if key not in known}
    accuracy = ConfidenceThreshold.from_json(meta["accuracy"]) if "accuracy" in meta else None
    temperature = float(meta["temperature"])
    return ReferenceProfile(list(meta["labels"]), ood, drift, temperature, rest, accuracy)


def _ood_projection(arrays: dict[str, np.ndarray], prefix: str, meta: dict[str, Any]) -> Projection:
    basis, variances = arrays[f"{prefix}.basis"], arrays[f"{prefix}.variances"]
    zeros = np.zeros(basis.shape[0], np.float32)  # the within-class basis is centred
    return Projection(zeros, basis, variances, float(meta["residual_variance"]))


def _early_arrays(ood: OodScorer) -> dict[str, np.ndarray]:
    if ood.early is None:
        return {}
    return {
        "ood.early.class_means": ood.early.class_means,
        "ood.early.basis": ood.early.projection.basis,
        "ood.early.variances": ood.early.projection.variances,
    }


def _early_meta(ood: OodScorer) -> dict[str, Any]:
    if ood.early is None:
        return {}
    return {
        "early": {
            "residual_variance": ood.early.projection.residual_variance,
            "float64": ood.early.float64,
        },
        "standardization": [float(v) for v in ood.standardization],
    }
