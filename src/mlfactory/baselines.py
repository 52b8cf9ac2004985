"""Reference points for a model's test score, computed on the same split.

A trained model is only interesting next to what a trivial rule (always the majority class) and
a simple classical model reach. The simple model is the modality's (`Modality.baseline`): it
reads the same raw inputs the encoder reads, e.g. logistic regression on small-image pixels,
on TF-IDF of the text, or on the mean log-mel per band.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlfactory.data.dataset import PreparedDataset
from mlfactory.modalities import get_modality


@dataclass
class BaselineScore:
    """Accuracy and macro-F1 of one baseline on the test split."""

    name: str
    accuracy: float
    f1_macro: float


def majority_baseline(dataset: PreparedDataset) -> BaselineScore:
    """Always predict the most frequent training label."""
    majority = Counter(item.label for item in dataset.split("train")).most_common(1)[0][0]
    truth = [item.label for item in dataset.split("test")]
    return _score("majority class", dataset, truth, [majority] * len(truth))


def simple_baseline(
    dataset: PreparedDataset, preprocessing: Mapping[str, Any] | None = None
) -> BaselineScore:
    """The modality's simple classical model, trained on train and scored on test.

    Args:
        dataset: the prepared dataset.
        preprocessing: the bundle's preprocessing parameters (default: the modality's).
    """
    modality = get_modality(dataset.modality)
    baseline = modality.baseline(modality.preprocessing(preprocessing))
    train, test = dataset.split("train"), dataset.split("test")
    baseline.model.fit([item.read_bytes() for item in train], [item.label for item in train])
    predicted = baseline.model.predict([item.read_bytes() for item in test])
    return _score(baseline.name, dataset, [item.label for item in test], list(predicted))


def _score(
    name: str, dataset: PreparedDataset, truth: list[str], predicted: list[str]
) -> BaselineScore:
    from sklearn.metrics import accuracy_score, f1_score

    # As the model's metrics: labels with no test item stay out of the macro average.
    supported = [label for label in dataset.labels if label in set(truth)]
    return BaselineScore(
        name,
        float(accuracy_score(truth, predicted)),
        float(f1_score(truth, predicted, labels=supported, average="macro", zero_division=0)),
    )
