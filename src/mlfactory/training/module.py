"""The LightningModule: optimisation and metrics around any modality's Classifier."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn

from mlfactory.output import phase_log
from mlfactory.training.network import Classifier

Batch = tuple[dict[str, torch.Tensor], torch.Tensor]


class ClassifierModule(L.LightningModule):
    """Cross-entropy training with accuracy and macro-F1 tracked per epoch."""

    def __init__(
        self,
        net: Classifier,
        num_classes: int,
        lr: float,
        weight_decay: float,
        max_epochs: int,
        class_weights: list[float] | None = None,
        lr_schedule: str = "cosine",
        lr_step_epochs: int = 5,
        lr_gamma: float = 0.5,
        compile_mode: str | None = None,
    ) -> None:
        """`compile_mode`: run the network's forward (and so its backward) compiled by
        `torch.compile` in this mode in training steps; None runs it eagerly. Validation and
        test steps run eagerly: they take a small part of an epoch, and compiling their
        eval-mode graph would cost as long again as the training graph. Only the call is
        compiled: `net` itself, its parameters and the checkpoint's keys stay as they are, and
        `net` is what the bundle exports.
        """
        super().__init__()
        # The run's params are the whole recipe, logged once by train(); logging these again on a
        # resume with a longer schedule would be refused by MLflow (params are immutable).
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.net = net
        # A compiled function of the bound forward, not a module: it adds no state_dict keys.
        self._compiled_forward = None
        if compile_mode:
            # Dynamo keeps its compiled graphs, the shapes it has seen and its recompile limit
            # (8) per code object, and `Classifier.forward` is one for every network: a second
            # run in the process (a sweep's trial) would compile for dynamic shapes and, after
            # a few runs, silently fall back to eager. Each compiled run starts afresh instead;
            # Inductor's on-disk cache still serves the kernels it compiled before.
            torch._dynamo.reset()
            self._compiled_forward = torch.compile(net.forward, mode=compile_mode)
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.loss = nn.CrossEntropyLoss(weight=weight)
        metrics = torchmetrics.MetricCollection(
            {
                "acc": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes),
                "f1_macro": torchmetrics.F1Score(
                    task="multiclass", num_classes=num_classes, average="macro"
                ),
            }
        )
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def on_train_start(self) -> None:
        if self._compiled_forward is not None and self.trainer.is_global_zero:
            phase_log.info(
                "fit: training steps compiled by torch.compile (mode %s): the first steps wait "
                "for the compiling (minutes on a CPU)",
                self.hparams["compile_mode"],
            )

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self._compiled_forward is not None and self.training:
            return self._compiled_forward(*inputs.values())
        return self.net(*inputs.values())

    def _step(
        self, batch: Batch, stage: str, metrics: torchmetrics.MetricCollection
    ) -> torch.Tensor:
        inputs, labels = batch
        logits = self(inputs)
        loss = self.loss(logits, labels)
        metrics.update(logits, labels)
        self.log(
            f"{stage}/loss",
            loss,
            prog_bar=True,
            on_epoch=True,
            on_step=stage == "train",
            batch_size=labels.shape[0],
            sync_dist=True,  # under DDP: the mean over all ranks (early stopping reads val/loss)
        )
        self.log_dict(metrics, prog_bar=stage != "train", on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", self.train_metrics)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "val", self.val_metrics)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test", self.test_metrics)

    def configure_optimizers(self) -> Any:
        parameters = [p for p in self.net.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            parameters, lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )
        return {"optimizer": optimizer, "lr_scheduler": self._scheduler(optimizer)}

    def _scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        """The per-epoch learning-rate schedule named by `lr_schedule`."""
        schedule = self.hparams["lr_schedule"]
        if schedule == "cosine":
            epochs = max(1, self.hparams["max_epochs"])
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        if schedule == "step":
            return torch.optim.lr_scheduler.StepLR(
                optimizer, step_size=self.hparams["lr_step_epochs"], gamma=self.hparams["lr_gamma"]
            )
        if schedule == "constant":
            return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        raise ValueError(f"unknown lr_schedule '{schedule}'")
