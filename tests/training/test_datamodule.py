"""Training data loaders: augmentation randomness with several worker processes."""

from __future__ import annotations

import numpy as np

from mlfactory.training.datamodule import ClassificationData
from mlfactory.training.train import TrainResult
from tests.training_path import training_inputs


def record_draw(arrays: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """An augmentation that passes the item through and reports the random number it drew."""
    return {**arrays, "draw": np.array([rng.random()])}


def epoch_draws(result: TrainResult, seed: int) -> list[np.ndarray]:
    """Per batch, the draws of one training epoch with 2 loader workers and batches of 4."""
    encoder = training_inputs(result, []).encoder
    data = ClassificationData(
        result.dataset, encoder, batch_size=4, num_workers=2, augment=record_draw, seed=seed
    )
    loader = data.train_dataloader()
    try:
        return [inputs["draw"].numpy().ravel() for inputs, _ in loader]
    finally:
        del loader  # persistent workers stop with their loader


def test_each_worker_draws_its_own_augmentation_and_reruns_repeat(
    trained_digits: TrainResult,
) -> None:
    draws = epoch_draws(trained_digits, seed=7)
    # Workers take batches in turn: worker 0 the even ones, worker 1 the odd ones.
    worker0, worker1 = np.concatenate(draws[0:6:2]), np.concatenate(draws[1:6:2])
    assert not np.allclose(worker0, worker1)
    assert len({round(float(x), 12) for batch in draws for x in batch}) == sum(map(len, draws))
    rerun = epoch_draws(trained_digits, seed=7)
    np.testing.assert_array_equal(np.concatenate(draws), np.concatenate(rerun))
    other_seed = epoch_draws(trained_digits, seed=8)
    assert not np.allclose(np.concatenate(draws)[:8], np.concatenate(other_seed)[:8])
