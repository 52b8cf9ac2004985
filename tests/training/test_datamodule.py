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


def epoch_reads(
    result: TrainResult, epochs: list[int], num_workers: int
) -> list[tuple[list[int], np.ndarray]]:
    """(labels in the order read, augmentation draws) of each of `epochs`, read in turn from
    one loader, as Lightning reads them (`set_epoch` first)."""
    encoder = training_inputs(result, []).encoder
    data = ClassificationData(
        result.dataset, encoder, 4, num_workers=num_workers, augment=record_draw, seed=7
    )
    loader = data.train_dataloader()
    reads = []
    try:
        for epoch in epochs:
            loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
            batches = list(loader)
            labels = [int(label) for _, batch in batches for label in batch]
            draws = np.concatenate([inputs["draw"].numpy().ravel() for inputs, _ in batches])
            reads.append((labels, draws))
    finally:
        del loader
    return reads


def test_an_epoch_reads_the_same_whatever_came_before_and_however_many_workers(
    trained_digits: TrainResult,
) -> None:
    # What a run resumed at epoch 2 reads (a new process, epoch 2 first) is what the run that
    # was never interrupted read there, and a resume may change trainer.num_workers.
    (_, _, uninterrupted) = epoch_reads(trained_digits, [0, 1, 2], num_workers=2)
    (resumed,) = epoch_reads(trained_digits, [2], num_workers=0)
    assert resumed[0] == uninterrupted[0]
    np.testing.assert_array_equal(resumed[1], uninterrupted[1])
    (first,) = epoch_reads(trained_digits, [0], num_workers=0)
    assert first[0] != uninterrupted[0]  # each epoch its own order and draws
    assert not np.allclose(first[1], uninterrupted[1])
