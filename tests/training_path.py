"""Training-side helpers for tests: the in-training prediction path, and untrained bundles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlfactory.bundle import Bundle, BundleMeta
from mlfactory.config.loader import Recipe, load_recipe_from_dict, preprocessing_params
from mlfactory.data.dataset import Item
from mlfactory.training.backbones import build_classifier, training_encoder
from mlfactory.training.datamodule import EncodedDataset
from mlfactory.training.export import export_bundle
from mlfactory.training.network import InferenceGraph
from mlfactory.training.train import TrainResult


def training_inputs(result: TrainResult, items: Sequence[Item]) -> EncodedDataset:
    """`items` encoded by the training data pipeline of `result`'s recipe."""
    recipe = load_recipe_from_dict(result.bundle.meta.config)
    encoder, _ = training_encoder(
        recipe.config, preprocessing_params(recipe.config), result.out_dir
    )
    return EncodedDataset(list(items), encoder, result.dataset.label_index())


def trained_graph(result: TrainResult) -> InferenceGraph:
    """The run's best torch weights (the ones it exported) as the inference graph, in eval mode."""
    recipe = load_recipe_from_dict(result.bundle.meta.config)
    net = build_classifier(recipe.config, len(result.dataset.labels))
    checkpoint = result.out_dir / "checkpoints" / "best.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict(
        {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    )
    return InferenceGraph(net).eval()


def training_probabilities(result: TrainResult, items: Sequence[Item]) -> list[np.ndarray]:
    """Class probabilities of each item from the training pipeline and the best torch weights."""
    inputs = training_inputs(result, items)
    graph = trained_graph(result)
    with torch.no_grad():
        return [
            graph(*(t.unsqueeze(0) for t in inputs[i][0].values()))[0][0].numpy()
            for i in range(len(inputs))
        ]


def untrained_bundle(
    recipe: Recipe,
    labels: list[str],
    items: Sequence[Item],
    out_dir: Path,
    name: str,
    metrics: dict[str, Any] | None = None,
) -> Bundle:
    """The recipe's network, untrained, exported as a real bundle to `out_dir/bundle`.

    `items` are the export's parity inputs; `out_dir` also receives the text tokenizer.
    """
    params = preprocessing_params(recipe.config)
    encoder, assets = training_encoder(recipe.config, params, out_dir)
    meta = BundleMeta(
        name=name,
        version="0.0.1",
        modality=recipe.config.modality,
        labels=labels,
        preprocessing=params,
        metrics=metrics or {},
        config=recipe.resolved,
    )
    net = build_classifier(recipe.config, len(labels))
    return export_bundle(net, encoder, meta, out_dir / "bundle", list(items), assets)
