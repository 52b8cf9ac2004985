"""A run interrupted at an epoch boundary and resumed ends with the model of the run that was
never interrupted: same shuffle, same augmentation, same dropout masks (`EpochShuffle`,
`RandomState`)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from mlfactory.config.loader import load_recipe
from mlfactory.errors import Interrupted
from mlfactory.training.train import train

from ..conftest import SMALL_NETWORK, fast_digits_overrides


class CtrlCAtEpoch(Callback):
    """Ctrl-C as the epoch `epoch` starts: `last.ckpt` holds the epochs before it."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


def weights(out: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu")
    return checkpoint["state_dict"]


def test_a_run_resumed_at_an_epoch_boundary_ends_as_the_uninterrupted_run(
    digit_folder: Path, tmp_path: Path
) -> None:
    # Dropout in the head draws from torch's stream, augmentation from numpy's: both must
    # continue where the interrupted process left them. Two epochs after the interruption: the
    # shuffle of each must be the uninterrupted run's.
    recipe = load_recipe(
        "digits",
        [
            *fast_digits_overrides(digit_folder, tmp_path, epochs=3),
            *SMALL_NETWORK,
            "model.dropout=0.5",
            "trainer.augment=true",
        ],
    )
    whole = train(recipe, tmp_path / "whole", progress=False)
    with pytest.raises((KeyboardInterrupt, Interrupted)):
        train(recipe, tmp_path / "cut", progress=False, callbacks=[CtrlCAtEpoch(1)])
    resumed = train(recipe, tmp_path / "cut", resume=True, progress=False)

    expected, got = weights(whole.out_dir), weights(resumed.out_dir)
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        # One machine, one process: the same kernels and threads, so the same numbers.
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-6, msg=name)
