"""Reference points for a model's test score, computed on the same split.

A trained model is only interesting next to what a trivial rule (always the majority class) and
a simple classical model reach. The simple model is per modality: logistic regression on raw
pixels (images); more modalities add theirs here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from mlfactory.data.dataset import Item, PreparedDataset

PIXEL_SIDE = 16


@dataclass
class BaselineScore:
    """Accuracy and macro-F1 of one baseline on the test split."""

    name: str
    accuracy: float
    f1_macro: float


def majority_baseline(dataset: PreparedDataset) -> BaselineScore:
    """Always predict the most frequent training label."""
    from sklearn.metrics import accuracy_score, f1_score

    majority = Counter(item.label for item in dataset.split("train")).most_common(1)[0][0]
    truth = [item.label for item in dataset.split("test")]
    guess = [majority] * len(truth)
    return BaselineScore(
        "majority class",
        float(accuracy_score(truth, guess)),
        float(f1_score(truth, guess, labels=dataset.labels, average="macro", zero_division=0)),
    )


def simple_baseline(dataset: PreparedDataset) -> BaselineScore:
    """The modality's simple classical model, trained on train and scored on test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if dataset.modality != "image":
        raise ValueError(f"no simple baseline for modality {dataset.modality}")
    name = f"logistic regression on {PIXEL_SIDE}x{PIXEL_SIDE} pixels"
    train_x, train_y = _pixels(dataset.split("train"))
    test_x, test_y = _pixels(dataset.split("test"))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    model.fit(train_x, train_y)
    predicted = model.predict(test_x)
    return BaselineScore(
        name,
        float(accuracy_score(test_y, predicted)),
        float(f1_score(test_y, predicted, labels=dataset.labels, average="macro", zero_division=0)),
    )


def _pixels(items: list[Item]) -> tuple[np.ndarray, list[str]]:
    from PIL import Image

    from mlfactory.modalities.image import decode_image

    rows = []
    for item in items:
        image = decode_image(item.read_bytes()).resize(
            (PIXEL_SIDE, PIXEL_SIDE), Image.Resampling.BILINEAR
        )
        rows.append(np.asarray(image, dtype=np.float32).ravel() / 255.0)
    return np.stack(rows), [item.label for item in items]
