"""The training progress bar the demo (and `train` on a terminal) shows: epochs counted from 1,
no metrics beside it (no `v_num`), gone from the screen when training ends."""

from __future__ import annotations

import io

import lightning as L
import rich
from lightning.pytorch.demos.boring_classes import BoringModel

from mlfactory.training.lightning_trainer import EpochProgressBar


def test_the_progress_bar_counts_epochs_from_one_and_leaves_nothing_behind() -> None:
    screen = io.StringIO()
    bar = EpochProgressBar()
    # Lightning draws on rich's global console, made from these
    bar._console_kwargs = {"file": screen, "force_terminal": True, "width": 80}
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_train_batches=3,
        limit_val_batches=1,
    )
    model = BoringModel()
    try:
        trainer.fit(model)
    finally:
        rich.reconfigure()  # rich's own console again
    assert bar._get_train_description(0).strip() == "Epoch 1/2"
    assert bar.get_metrics(trainer, model) == {}  # no v_num, no loss
    assert bar.progress is not None and bar.progress.live.transient
    shown = screen.getvalue()
    assert "Epoch 2/2" in shown and "Epoch 2/1" not in shown and "v_num" not in shown
