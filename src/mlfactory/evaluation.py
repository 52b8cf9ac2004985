"""Evaluate a bundle on a dataset split: the numbers describe the exact artifact that ships."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlfactory.data.dataset import Item
from mlfactory.predictor import Predictor

CONFUSION_PNG = "confusion_matrix.png"


def evaluate_items(predictor: Predictor, items: list[Item], batch_size: int = 64) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.

    Args:
        predictor: the bundle to evaluate.
        items: labelled items (normally the test split).
        batch_size: items per ONNX Runtime call.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    from sklearn.metrics import precision_recall_fscore_support as prfs

    labels = predictor.labels
    index = {label: i for i, label in enumerate(labels)}
    truth = np.asarray([index[item.label] for item in items])
    predicted = np.concatenate(
        [
            predictor.run(
                [predictor.encode(item.read_bytes()) for item in items[i : i + batch_size]]
            ).probabilities.argmax(axis=1)
            for i in range(0, len(items), batch_size)
        ]
    )
    all_classes = list(range(len(labels)))
    precision, recall, f1, support = prfs(truth, predicted, labels=all_classes, zero_division=0)
    return {
        "split_size": len(items),
        "accuracy": float(accuracy_score(truth, predicted)),
        "f1_macro": float(
            f1_score(truth, predicted, labels=all_classes, average="macro", zero_division=0)
        ),
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
