"""A served prediction equals the in-training prediction for the same file."""

from __future__ import annotations

import numpy as np
import torch
from fastapi.testclient import TestClient

from mlfactory.config.loader import load_recipe_from_dict, preprocessing_params
from mlfactory.predictor import Predictor
from mlfactory.serving.app import create_app
from mlfactory.training.backbones import build_classifier
from mlfactory.training.datamodule import EncodedDataset
from mlfactory.training.export import PARITY_TOLERANCE
from mlfactory.training.modality_setup import training_encoder
from mlfactory.training.network import InferenceGraph
from mlfactory.training.train import TrainResult


def test_served_probabilities_equal_training_probabilities(trained_digits: TrainResult) -> None:
    dataset = trained_digits.dataset
    recipe = load_recipe_from_dict(trained_digits.bundle.meta.config)
    # The in-training path: the training data pipeline and the trained torch weights.
    encoder, _ = training_encoder(
        recipe.config, preprocessing_params(recipe.config), trained_digits.out_dir
    )
    items = dataset.split("test")[:6]
    torch_data = EncodedDataset(items, encoder, dataset.label_index())
    net = build_classifier(recipe.config, len(dataset.labels))
    state = torch.load(
        trained_digits.out_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True
    )["state_dict"]
    net.load_state_dict(
        {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    )
    graph = InferenceGraph(net).eval()
    with torch.no_grad():
        expected = [
            graph(*(t.unsqueeze(0) for t in torch_data[i][0].values()))[0][0].numpy()
            for i in range(len(items))
        ]

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
        np.testing.assert_allclose(probabilities, row, atol=PARITY_TOLERANCE)
        assert prediction["label"] == dataset.labels[int(np.argmax(row))]
