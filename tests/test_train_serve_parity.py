"""A served prediction equals the in-training prediction for the same file."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mlfactory.predictor import Predictor
from mlfactory.serving.app import create_app
from mlfactory.training.train import TrainResult
from tests.numerics import assert_same_prediction
from tests.training_path import training_inputs, training_probabilities


@pytest.mark.numerics
def test_served_probabilities_equal_training_probabilities(trained_digits: TrainResult) -> None:
    dataset = trained_digits.dataset
    items = dataset.split("test")[:6]
    # The in-training path: the training data pipeline and the trained torch weights.
    torch_data = training_inputs(trained_digits, items)
    expected = training_probabilities(trained_digits, items)

    # The served preprocessing (configured from bundle.json alone) is bit-identical to training's.
    served_encoder = Predictor.from_path(trained_digits.bundle.path).encoder
    for index, item in enumerate(items):
        for name, tensor in torch_data[index][0].items():
            np.testing.assert_array_equal(served_encoder(item.read_bytes())[name], tensor.numpy())

    with TestClient(create_app(trained_digits.bundle.path)) as client:
        files = [
            ("files", (f"{i}.png", item.read_bytes(), "image/png")) for i, item in enumerate(items)
        ]
        response = client.post("/v1/predict", files=files)
    assert response.status_code == 200
    served = response.json()["predictions"]
    for row, prediction in zip(expected, served, strict=True):
        probabilities = np.array([prediction["probabilities"][label] for label in dataset.labels])
        # Same inputs, two runtimes: agreement within the export's own parity tolerance.
        assert_same_prediction(probabilities, row)
