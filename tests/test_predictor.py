"""The one inference path: inputs and outputs that are not finite numbers are refused by name."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlfactory.errors import InputError
from mlfactory.predictor import BatchOutput, Predictor
from tests.serving.tiny_bundles import tiny_bundle


def png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_input_the_model_answers_with_nan_is_refused_by_position(tmp_path: Path) -> None:
    predictor = Predictor.from_path(tiny_bundle(tmp_path / "b", "image", unstable=True))
    [white] = predictor.predict([png("white")])
    assert np.isfinite(white.score)
    with pytest.raises(InputError, match=r"^input 1: the model's output .* NaN") as caught:
        predictor.predict([png("white"), png("black"), png("white")])
    assert caught.value.status_code == 422


def test_bad_inputs_are_named_by_position(tmp_path: Path) -> None:
    predictor = Predictor.from_path(tiny_bundle(tmp_path / "b", "image"))
    with pytest.raises(InputError, match=r"^input 2: not an image"):
        predictor.predict([png("white"), png("red"), b"plain text"])


def test_non_finite_model_inputs_are_refused(tmp_path: Path) -> None:
    predictor = Predictor.from_path(tiny_bundle(tmp_path / "b", "image"))

    def overflowing(raw: bytes) -> dict[str, np.ndarray]:  # an encoder whose features overflow
        return {"pixel_values": np.full((3, 16, 16), np.inf, dtype=np.float32)}

    predictor.encoder = overflowing  # type: ignore[assignment]
    with pytest.raises(
        InputError, match="NaN or infinite values in the model input 'pixel_values'"
    ):
        predictor.encode(png("white"))


def test_check_finite_names_the_first_bad_row() -> None:
    output = BatchOutput(
        probabilities=np.array([[0.5, 0.5], [0.2, 0.8], [0.1, 0.9]], dtype=np.float32),
        embeddings=np.array([[0.0], [np.inf], [np.nan]], dtype=np.float32),
    )
    with pytest.raises(InputError, match=r"^b: "):
        Predictor.check_finite(output, ["a", "b", "c"])
    Predictor.check_finite(
        BatchOutput(output.probabilities, np.zeros((3, 1), np.float32)), ["a", "b", "c"]
    )
