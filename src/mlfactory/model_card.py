"""The model card of a bundle: what it is, how good it is, on what data, and where it came from.

One plain JSON object built from `bundle.json` and, when the bundle has one, the monitoring
reference profile's `profile.json`. `GET /v1/model/card`, the web UI's model card page and
`mlfactory report` all show this object; none of them reads a bundle another way. Nothing here
imports torch or loads the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlfactory.bundle import Bundle

# The card reads only the JSON half of the reference profile, never its arrays.
from mlfactory.monitoring.profile import META_FILE as PROFILE_META_FILE

SPLITS = ("train", "val", "test")


def model_card(bundle: Bundle) -> dict[str, Any]:
    """The card of `bundle` (see `mlfactory.serving.schemas.ModelCard` for the fields).

    Bundles exported before a field was recorded still get a card: what they lack is null
    (e.g. the split counts, stored since evaluation records them) or empty. So does a part of
    `bundle.json`'s metrics that holds values of the wrong type (a hand-edited or corrupted
    bundle, which still loads and serves): it is left out, never an error.
    """
    meta = bundle.meta
    return {
        "name": meta.name,
        "version": meta.version,
        "modality": meta.modality,
        "labels": list(meta.labels),
        "created_at": meta.created_at,
        "metrics": test_metrics(meta.metrics),
        "per_class": per_class_table(meta.metrics, meta.labels),
        "confusion_matrix": confusion_matrix(meta.metrics, len(meta.labels)),
        "data": training_data(meta.metrics, meta.config, meta.data_fingerprint),
        "lineage": {
            "git_commit": meta.git_commit,
            "mlflow_run_id": meta.mlflow_run_id,
            "recipe": _recipe_name(meta.config),
        },
        "reference_profile": profile_summary(bundle.path),
    }


def _test_section(metrics: dict[str, Any]) -> dict[str, Any]:
    # `record_evaluation` stores {"test": {...}}; older or hand-made bundles a flat dict.
    test = metrics.get("test")
    return test if isinstance(test, dict) else metrics


def test_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Accuracy, macro-F1, the test split's size, the labels without a test item, and the
    fingerprint of the data they were computed on (`mlfactory evaluate` may have run on data
    that changed since training)."""
    test = _test_section(metrics)
    unsupported = test.get("unsupported_labels")
    return {
        "accuracy": _number(test.get("accuracy")),
        "f1_macro": _number(test.get("f1_macro")),
        "test_items": _count(test.get("split_size")),
        "unsupported_labels": [str(x) for x in unsupported]
        if isinstance(unsupported, list)
        else [],
        "data_fingerprint": _text(metrics.get("data_fingerprint")),
    }


def per_class_table(metrics: dict[str, Any], labels: list[str]) -> list[dict[str, Any]]:
    """One row per label (in output order): precision, recall, F1 and test support."""
    rows = _test_section(metrics).get("per_class")
    if not isinstance(rows, dict):
        return []
    table = []
    for label in labels:
        row = _object(rows, label)
        table.append(
            {
                "label": label,
                "precision": _number(row.get("precision")),
                "recall": _number(row.get("recall")),
                "f1": _number(row.get("f1")),
                "support": _count(row.get("support")),
            }
        )
    return table


def confusion_matrix(metrics: dict[str, Any], size: int) -> list[list[int]] | None:
    """Test counts, rows the true label and columns the predicted one; None if not stored (or
    not a `size` x `size` matrix of counts)."""
    matrix = _test_section(metrics).get("confusion_matrix")
    if not isinstance(matrix, list) or len(matrix) != size:
        return None
    if not all(isinstance(row, list) and len(row) == size for row in matrix):
        return None
    rows = [_counts(row) for row in matrix]
    whole = [row for row in rows if row is not None]
    return whole if len(whole) == size else None


def training_data(
    metrics: dict[str, Any], config: dict[str, Any], fingerprint: str | None
) -> dict[str, Any]:
    """The data source, its fingerprint, and the items per split (and per split and label)."""
    recorded, data_config = _object(metrics, "data"), _object(config, "data")
    per_label = _split_counts(recorded.get("counts"))
    return {
        "source": _text(recorded.get("source")) or _text(data_config.get("source")),
        "version": _text(recorded.get("version")),
        "fingerprint": fingerprint or _text(metrics.get("data_fingerprint")),
        "splits": {s: sum(c.values()) for s, c in per_label.items()} if per_label else None,
        "counts": per_label,
    }


def _split_counts(counts: Any) -> dict[str, dict[str, int]] | None:
    """Items per split and label; None when not stored, or when any count is not a count."""
    if not isinstance(counts, dict):
        return None
    per_label = {}
    for split in SPLITS:
        labels = _object(counts, split)
        values = _counts(list(labels.values()))
        if values is None:
            return None
        per_label[split] = dict(zip(map(str, labels), values, strict=True))
    return per_label


def profile_summary(folder: Path) -> dict[str, Any] | None:
    """What the bundle's monitoring reference profile holds, or None when it has none.

    A profile that cannot be read still gets a summary: its `problem` says why, so a broken
    profile shows on the card instead of failing it. A value of the wrong type (a text where
    a number belongs) is left out (null), and `problem` names it.
    """
    path = folder / PROFILE_META_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return {"problem": f"{PROFILE_META_FILE} cannot be read: {exc}"}
    ood, features = _object(raw, "ood"), _object(_object(raw, "drift"), "features")
    summary: dict[str, Any] = {}
    wrong = []
    for field, key, section, kind in _PROFILE_FIELDS:
        value = (ood if section == "ood" else raw).get(key)
        summary[field] = _READERS[kind](value)
        if value is not None and summary[field] is None:
            wrong.append(f"{section}.{key}" if section else key)
    summary["features"] = {str(k): str(v) for k, v in features.items()}
    summary["problem"] = None
    if wrong:
        left_out = ", ".join(wrong)
        summary["problem"] = f"{PROFILE_META_FILE} holds values of the wrong type: {left_out}"
    return summary


# Each field of the summary: (card field, profile.json key, its section, the type it must have).
_PROFILE_FIELDS = (
    ("source", "source", "", "text"),
    ("created_at", "created_at", "", "text"),
    ("reference_items", "n_reference", "", "count"),
    ("reference_accuracy", "reference_accuracy", "", "number"),
    ("reference_confidence", "reference_confidence", "", "number"),
    ("temperature", "temperature", "", "number"),
    ("embedding_dim", "embedding_dim", "", "count"),
    ("ood_method", "method", "ood", "text"),
    ("ood_threshold", "threshold", "ood", "number"),
    ("ood_false_positive_rate", "fpr", "ood", "number"),
    ("ood_expected_rate", "expected_rate", "ood", "number"),
    ("ood_rate_low", "rate_low_90", "ood", "number"),
    ("ood_rate_high", "rate_high_90", "ood", "number"),
)


def _object(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


def _recipe_name(config: dict[str, Any]) -> str | None:
    name = config.get("name")
    return name if isinstance(name, str) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    """A whole number (an integer, or a float such as 4.0), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def _counts(values: list[Any]) -> list[int] | None:
    """Whole numbers (see `_count`), or None when any value is not one."""
    counts = [_count(value) for value in values]
    whole = [count for count in counts if count is not None]
    return whole if len(whole) == len(counts) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


_READERS = {"text": _text, "count": _count, "number": _number}
