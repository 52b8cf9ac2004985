"""Reference points for a model's test score, computed on the same split.

A trained model is only interesting next to what a trivial rule (always the majority class) and
a simple classical model reach. The simple model is per modality: logistic regression on raw
pixels (images); more modalities add theirs here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

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


def simple_baseline(
    dataset: PreparedDataset, preprocessing: Mapping[str, Any] | None = None
) -> BaselineScore:
    """The modality's simple classical model, trained on train and scored on test.

    Args:
        dataset: the prepared dataset.
        preprocessing: the bundle's preprocessing parameters (audio; default: the schema's).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if dataset.modality == "text":
        return tfidf_baseline(dataset)
    features: Callable[[list[Item]], tuple[np.ndarray, list[str]]] = _pixels
    name = f"logistic regression on {PIXEL_SIDE}x{PIXEL_SIDE} pixels"
    if dataset.modality == "audio":
        features = partial(_band_means, preprocessing=preprocessing)
        name = "logistic regression on mean log-mel per band"
    elif dataset.modality != "image":
        raise ValueError(f"no simple baseline for modality {dataset.modality}")
    train_x, train_y = features(dataset.split("train"))
    test_x, test_y = features(dataset.split("test"))
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


def _band_means(
    items: list[Item], preprocessing: Mapping[str, Any] | None
) -> tuple[np.ndarray, list[str]]:
    """Each clip's log-mel (as the model sees it) averaged over time: one value per mel band."""
    from dataclasses import asdict

    from mlfactory.config.schema import AudioPreprocessing
    from mlfactory.modalities.audio import INPUT_NAME, AudioEncoder

    encoder = AudioEncoder(preprocessing or asdict(AudioPreprocessing()))
    rows = [encoder(item.read_bytes())[INPUT_NAME].mean(axis=1) for item in items]
    return np.stack(rows), [item.label for item in items]


def tfidf_baseline(dataset: PreparedDataset) -> BaselineScore:
    """Logistic regression on TF-IDF of word uni- and bigrams, fitted on the train split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline

    train, test = dataset.split("train"), dataset.split("test")
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(max_iter=1000, C=10.0),
    )
    model.fit([item.text or "" for item in train], [item.label for item in train])
    truth = [item.label for item in test]
    predicted = model.predict([item.text or "" for item in test])
    return BaselineScore(
        "logistic regression on TF-IDF word 1-2 grams",
        float(accuracy_score(truth, predicted)),
        float(f1_score(truth, predicted, labels=dataset.labels, average="macro", zero_division=0)),
    )
