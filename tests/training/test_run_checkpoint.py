"""A run folder's checkpoint callback, read back after the folder moved."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mlfactory.training.run_checkpoint import RunFolderCheckpoint


def _saved_state(folder: Path) -> dict[str, object]:
    """The callback's state as a run in `folder` saved it into last.ckpt, after its second
    epoch was the best so far."""
    written = ModelCheckpoint(dirpath=folder, filename="best", monitor="val/loss", save_last=True)
    best = str(Path(written.dirpath or "") / "best.ckpt")
    written.best_model_score = torch.tensor(0.25)
    written.best_model_path = written.kth_best_model_path = best
    written.best_k_models = {best: torch.tensor(0.25)}
    written.kth_value = torch.tensor(0.25)
    written.last_model_path = str(Path(written.dirpath or "") / "last.ckpt")
    return written.state_dict()


def test_a_moved_run_keeps_its_best_score_and_names_its_own_checkpoints(tmp_path: Path) -> None:
    state = _saved_state(tmp_path / "old" / "checkpoints")
    here = tmp_path / "new" / "checkpoints"
    callback = RunFolderCheckpoint(dirpath=here, filename="best", monitor="val/loss")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Lightning's "The dirpath has changed" among them
        callback.load_state_dict(state)
    assert callback.best_model_score == torch.tensor(0.25)  # a worse epoch will not replace it
    assert callback.best_model_path == str(here / "best.ckpt")
    assert callback.kth_best_model_path == str(here / "best.ckpt")
    assert callback.last_model_path == str(here / "last.ckpt")
    assert list(callback.best_k_models) == [str(here / "best.ckpt")]


def test_a_run_resumed_where_it_was_is_read_back_as_lightning_does(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "checkpoints"
    state = _saved_state(folder)
    ours = RunFolderCheckpoint(dirpath=folder, filename="best", monitor="val/loss")
    lightnings = ModelCheckpoint(dirpath=folder, filename="best", monitor="val/loss")
    ours.load_state_dict(state)
    lightnings.load_state_dict(state)
    assert ours.state_dict() == lightnings.state_dict()
