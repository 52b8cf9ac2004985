"""The recipe's Lightning Trainer (`make_trainer`): how often it logs step losses."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlfactory.config.loader import load_recipe
from mlfactory.training.lightning_trainer import make_trainer


@pytest.mark.parametrize(
    ("settings", "train_items", "interval"),
    [
        ([], 40, 5),  # 5 batches of 8: once per epoch
        ([], 1000, 10),
        (["trainer.limit_train_batches=2"], 1000, 2),
        # Each of 2 ranks gets 20 items: 3 batches (DistributedSampler pads 39 to 40 too).
        (["trainer.devices=2", "trainer.strategy=ddp_spawn"], 40, 3),
        (["trainer.devices=2", "trainer.strategy=ddp_spawn"], 39, 3),
        (["trainer.devices=2", "trainer.num_nodes=2", "trainer.strategy=ddp"], 40, 2),
    ],
)
def test_step_losses_are_logged_at_least_once_per_epoch_of_each_rank(
    settings: list[str], train_items: int, interval: int, tmp_path: Path
) -> None:
    """Lightning warns that a rank's batches are fewer than the logging interval, and logs no
    step loss that epoch; under DDP each rank sees its own share of the split."""
    overrides = ["trainer.accelerator=cpu", "trainer.batch_size=8", *settings]
    config = load_recipe("digits", overrides).config
    trainer, _ = make_trainer(
        config, None, tmp_path / "checkpoints", progress=False, train_items=train_items
    )
    assert trainer.log_every_n_steps == interval  # type: ignore[attr-defined]
