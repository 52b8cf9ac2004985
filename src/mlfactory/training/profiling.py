"""`trainer.profiler`: where the time of a fit goes.

- "simple" (Lightning's `SimpleProfiler`): the time of each Lightning hook over the fit (the
  training step, backward, the optimizer step, fetching the next batch, validation): calls,
  mean, total and share of the fit, in `fit-profile.txt`;
- "pytorch" (`torch.profiler`, `TorchOperatorProfile`): the operators of training steps 3 to 5
  of the fit (the first two warm up caches and allocators), CPU and, on a GPU, CUDA time, in
  `training-operators.txt`, and their trace in `training-steps.pt.trace.json`, to open in
  Perfetto (ui.perfetto.dev) or `chrome://tracing`.

The reports go to the run folder's `profiler/` (under DDP, one per rank: the rank in the file
name), and rank 0 logs that folder to the MLflow run as the artifacts `profiler/`. Profiling
slows the fit it measures: the simple profiler by a clock reading per hook, the operator
profile by more, during its 3 steps only.

Lightning's `AdvancedProfiler` (cProfile per hook) is not offered: its hooks nest, and a nested
cProfile switches the outer one off, so a training batch read 0.000 s. For the Python functions
that take a fit's time, run it under py-spy (`py-spy record -o fit.svg -- mlfactory train ...`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.profilers import Profiler, SimpleProfiler

from mlfactory.output import phase_log
from mlfactory.training.run_folder import PROFILER_DIR

REPORT_NAME = "profile"  # Lightning names the report fit-profile.txt
OPERATOR_ROWS = 30  # operators in the table
FIRST_STEP, STEPS = 3, 3  # the training steps of this fit the operator profile records


def make_profiler(kind: str | None, out_dir: Path) -> Profiler | Callback | None:
    """What `trainer.profiler` names, writing into `out_dir/profiler`: Lightning's simple
    profiler, the operator profile's callback ("pytorch"), or None. The folder is removed
    first, profiled or not: a report of an earlier fit would read as this one's."""
    folder = out_dir / PROFILER_DIR
    if folder.exists():
        shutil.rmtree(folder)
    if kind is None:
        return None
    if kind == "simple":
        return SimpleProfiler(folder, REPORT_NAME)
    return TorchOperatorProfile(folder)


class TorchOperatorProfile(Callback):
    """torch.profiler around training steps FIRST_STEP .. FIRST_STEP + STEPS - 1 of this fit:
    their operator table and trace (see the module docstring).

    Lightning's own PyTorchProfiler summarises only the steps recorded last, often a few
    validation steps; this records the training steps, which are what a slow fit is made of.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.batches = 0
        self.profile: torch.profiler.profile | None = None

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.batches += 1
        if self.batches == FIRST_STEP and self.profile is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if trainer.strategy.root_device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profile = torch.profiler.profile(activities=activities, record_shapes=True)
            self.profile.__enter__()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.profile is not None and self.batches >= FIRST_STEP + STEPS - 1:
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.profile is not None:  # the fit had fewer steps
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        assert self.profile is not None
        profile, self.profile = self.profile, None
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        profile.__exit__(None, None, None)
        rank = f"-{trainer.global_rank}" if trainer.world_size > 1 else ""
        self.folder.mkdir(parents=True, exist_ok=True)
        profile.export_chrome_trace(str(self.folder / f"training-steps{rank}.pt.trace.json"))
        sort = "self_cuda_time_total" if len(profile.activities) > 1 else "self_cpu_time_total"
        table = profile.key_averages().table(sort_by=sort, row_limit=OPERATOR_ROWS)
        steps = self.batches - FIRST_STEP + 1
        (self.folder / f"training-operators{rank}.txt").write_text(
            f"torch.profiler: training steps {FIRST_STEP} to {FIRST_STEP + steps - 1} of the fit"
            f", operators by {sort}\n{table}\n"
        )


def publish_profile(out_dir: Path, logger: MLFlowLogger, kind: str | None) -> None:
    """Log the profiler's folder to the MLflow run and say where its reports are."""
    folder = out_dir / PROFILER_DIR
    if kind is None or not folder.is_dir():
        return
    files = sorted(path.name for path in folder.iterdir() if path.is_file())
    if not files:
        return
    logger.experiment.log_artifacts(logger.run_id, str(folder), PROFILER_DIR)
    phase_log.info(
        "profiler: %s in %s (trainer.profiler=%s; also in the MLflow run under %s/)",
        ", ".join(files),
        folder,
        kind,
        PROFILER_DIR,
    )
