"""The random streams of a training process, saved in each checkpoint and restored on resume.

`train` seeds torch, numpy and Python's `random` once per process (`seed_everything`). A run
resumed from `last.ckpt` would start them afresh, and draw the dropout masks of its first
epochs again; with `RandomState` among the Trainer's callbacks, it continues the streams where
the checkpoint left them (the train loader's shuffle generator is not among them: it starts
afresh). Saved as plain lists and tensors: a checkpoint still loads with
`torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def random_state() -> dict[str, Any]:
    """The state of this process's torch (CPU and CUDA), numpy and Python generators."""
    kind, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, np.asarray(keys).tolist(), position, has_gauss, gauss],
        "python": [version, list(internal), gauss_next],
    }


def restore_random_state(state: dict[str, Any]) -> None:
    """Set the generators to what `random_state` returned (CUDA's only on as many devices)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


class RandomState(Callback):
    """Saves the process's random streams in each checkpoint; restores them when the fit
    resumes from one (Lightning calls `load_state_dict` before the first resumed epoch).

    Under DDP each rank saves its own state, but only rank 0's checkpoint is written: the other
    ranks resume with rank 0's streams (their data still differs: the sampler splits it).
    """

    def state_dict(self) -> dict[str, Any]:
        return random_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            restore_random_state(state_dict)
