"""Stop a fit once it has diverged, instead of training out the epoch on NaN weights.

Lightning's early stopping reads the validation loss, once per epoch: a fit whose weights turned
NaN in its first steps (`trainer.precision=16-true` has no loss scaling) trained the rest of
that epoch for nothing. `StopWhenDiverged` looks at the training loss every few steps, where
Lightning logs it anyway; a loss that is not finite, with weights that are not finite either,
cannot recover, so the fit stops there and says so. (A loss that is not finite once, with finite
weights, is a step that mixed precision's loss scaling skips: the fit goes on.) The export then
takes the best weights of an epoch before, or refuses the NaN ones (`publish.check_finite_weights`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger

from mlfactory.output import phase_log

DIVERGED_TAG = "diverged_at"  # the MLflow run's tag: where the fit stopped


def has_diverged(loss: torch.Tensor, network: torch.nn.Module) -> bool:
    """Whether a step's training loss and the network's weights are past recovering from."""
    if bool(torch.isfinite(loss).all()):
        return False
    weights = [p.detach().isfinite().all() for p in network.parameters()]
    return not weights or not bool(torch.stack(weights).all())


class StopWhenDiverged(L.Callback):
    """Checks at each of the trainer's logging intervals (`log_every_n_steps` batches) whether
    the fit has diverged, and stops it there: the loss it reads is one Lightning logs anyway.

    Under DDP every rank takes part in each check, and the fit stops if any rank's has diverged.
    `stopped_at` is then the (epoch, batch) it stopped at, both counted from 1.
    """

    def __init__(self) -> None:
        self.stopped_at: tuple[int, int] | None = None

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        every = max(1, trainer.log_every_n_steps)  # type: ignore[attr-defined]  # set in __init__
        if self.stopped_at is not None or (batch_idx + 1) % every:
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):  # a step that returned no loss: nothing to read
            return
        diverged = has_diverged(loss, module)
        if not trainer.strategy.reduce_boolean_decision(diverged, all=False):
            return
        trainer.should_stop = True
        self.stopped_at = (trainer.current_epoch + 1, batch_idx + 1)
        if trainer.is_global_zero:
            epoch, at_batch = self.stopped_at
            if isinstance(trainer.logger, MLFlowLogger):  # the run's page says why it ended early
                where = f"epoch {epoch}, batch {at_batch}"
                trainer.logger.experiment.set_tag(trainer.logger.run_id, DIVERGED_TAG, where)
            batches = trainer.num_training_batches
            of = f" of {batches}" if math.isfinite(batches) else ""
            phase_log.info(
                "fit: stopped in epoch %d at batch %d%s: training diverged (the loss is %s and "
                "the weights hold NaN or infinite values)",
                epoch,
                at_batch,
                of,
                float(loss.float().mean()),
            )
