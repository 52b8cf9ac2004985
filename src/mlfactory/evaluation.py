"""Evaluate a bundle on a dataset split: the numbers describe the exact artifact that ships.

Evaluation runs the bundle with ONNX Runtime, never torch, so `mlfactory evaluate` of a bundle
imports neither torch nor Lightning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlfactory.bundle import Bundle
from mlfactory.data.dataset import Item, PreparedDataset
from mlfactory.predictor import Predictor
from mlfactory.tracking import TrackedRun, without_secrets

CONFUSION_PNG = "confusion_matrix.png"


def record_evaluation(
    bundle: Bundle,
    dataset: PreparedDataset,
    out_dir: Path,
    run: TrackedRun | None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate the bundle on the test split; write the metrics into bundle.json and MLflow.

    `bundle.json`'s `metrics` gets `test` (see `evaluate_items`), `data_fingerprint` and `data`
    (the dataset's source and its items per split and label).

    Args:
        bundle: the bundle to evaluate (its `bundle.json` is rewritten with the metrics).
        dataset: the prepared dataset whose test split is used.
        out_dir: where the confusion-matrix PNG is written.
        run: the MLflow run to log the metrics and the PNG to, if any.
        metrics: `evaluate_items` of this bundle on the test split, if the caller has them.
    """
    if metrics is None:
        metrics = evaluate_items(Predictor(bundle), dataset.split("test"))
    bundle.meta.metrics = {
        "test": metrics,
        "data_fingerprint": dataset.fingerprint,
        # The model card shows the data: its source and the items per split and label.
        "data": {
            "source": without_secrets(dataset.source),
            "version": dataset.version,
            "counts": dataset.counts(),
        },
    }
    bundle.save_meta()
    png = plot_confusion_matrix(
        metrics["confusion_matrix"], bundle.meta.labels, out_dir / CONFUSION_PNG
    )
    if run is not None:
        run.log_metrics({"test/acc": metrics["accuracy"], "test/f1_macro": metrics["f1_macro"]})
        run.log_artifact(png)
    return metrics


def evaluate_items(predictor: Predictor, items: list[Item], batch_size: int = 64) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.

    A label with no item in `items` has no recall and no F1 to speak of: it is left out of the
    macro averages and named in `unsupported_labels` (its row in `per_class` has support 0),
    instead of averaging in an F1 of 0. Predicting such a label is still an error in the
    accuracy.

    Args:
        predictor: the bundle to evaluate.
        items: labelled items (normally the test split).
        batch_size: items per ONNX Runtime call.
    """
    truth = label_indices(predictor.labels, items)
    return scores(truth, predicted_indices(predictor, items, batch_size), predictor.labels)


def label_indices(labels: list[str], items: list[Item]) -> np.ndarray:
    """The index in `labels` of each item's true label."""
    index = {label: i for i, label in enumerate(labels)}
    return np.asarray([index[item.label] for item in items], dtype=np.int64)


def predicted_indices(predictor: Predictor, items: list[Item], batch_size: int = 64) -> np.ndarray:
    """The index of the label the bundle predicts for each item, `batch_size` items a call."""
    batches = [
        predictor.run(
            [predictor.encode(item.read_bytes()) for item in items[i : i + batch_size]]
        ).probabilities.argmax(axis=1)
        for i in range(0, len(items), batch_size)
    ]
    return np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)


def scores(truth: np.ndarray, predicted: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """The figures of `evaluate_items` from true and predicted label indices."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    from sklearn.metrics import precision_recall_fscore_support as prfs

    all_classes = list(range(len(labels)))
    precision, recall, f1, support = prfs(truth, predicted, labels=all_classes, zero_division=0)
    supported = [i for i in all_classes if support[i] > 0]
    return {
        "split_size": len(truth),
        "accuracy": float(accuracy_score(truth, predicted)),
        "f1_macro": float(
            f1_score(truth, predicted, labels=supported, average="macro", zero_division=0)
        ),
        "unsupported_labels": [labels[i] for i in all_classes if support[i] == 0],
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(truth, predicted, labels=all_classes).tolist(),
    }


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path) -> Path:
    """Save the confusion matrix as a PNG (rows: true label, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(matrix)
    size = max(4.0, 0.6 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(values, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    threshold = values.max() / 2 if values.size else 0
    for (row, col), count in np.ndenumerate(values):
        color = "white" if count > threshold else "black"
        axes.text(col, row, str(count), ha="center", va="center", color=color, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
