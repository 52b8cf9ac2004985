"""The best/last checkpoint callback of a run folder (`RunFolderCheckpoint`): `last.ckpt` holds
every epoch, and a folder that moved resumes from its own checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

MOVED_PATHS = ("best_model_path", "kth_best_model_path", "last_model_path")


class RunFolderCheckpoint(ModelCheckpoint):
    """Lightning's `ModelCheckpoint`, whose state read back from a checkpoint written in another
    folder (the run folder was moved or copied, then resumed) is taken as this folder's: the
    checkpoints it names are looked up here, by name. Lightning's own callback then forgets the
    best score (and warns "The dirpath has changed"), so the first epoch after the resume
    would replace `best.ckpt` however worse it was.

    `last.ckpt` is written at the end of every epoch. Lightning's (2.6) writes it only with a
    new best: after an epoch that did not improve, `--resume` would start again from the last
    one that did, and train the epochs after it once more.
    """

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_every_epoch(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_every_epoch(trainer)

    def _save_last_every_epoch(self, trainer: L.Trainer) -> None:
        """`last.ckpt` for this step, unless Lightning wrote it (with a best) or must not."""
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        before = state_dict.get("dirpath")
        if before is None or self.dirpath is None or before == self.dirpath:
            super().load_state_dict(state_dict)
            return
        here = Path(self.dirpath)

        def moved(path: str) -> str:
            return str(here / Path(path).name) if path else path

        state = {**state_dict, "dirpath": self.dirpath}
        for key in MOVED_PATHS:
            if key in state:
                state[key] = moved(state[key])
        if "best_k_models" in state:
            state["best_k_models"] = {moved(k): v for k, v in state["best_k_models"].items()}
        super().load_state_dict(state)
