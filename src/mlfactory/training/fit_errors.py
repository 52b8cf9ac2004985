"""Errors of a fit that the user can fix, as one line: torch and Lightning say them in a
traceback that does not name the fix."""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn
from torch.multiprocessing import ProcessRaisedException

from mlfactory.errors import ConfigError
from mlfactory.modalities import Encoder
from mlfactory.training.network import example_inputs, parameters_outside_the_output

# What `trainer.fit` raises that `fit_error` reads. Under ddp_spawn a rank's error arrives in
# the first process as its traceback's text.
FIT_ERRORS = (RuntimeError, ValueError, ProcessRaisedException)

# What torch says when a checkpoint's weights or optimizer state are for other parameters.
CHECKPOINT_MISMATCHES = (
    "Error(s) in loading state_dict",
    "doesn't match the size of optimizer's group",
    "loaded state dict has a different number of parameter groups",
)

# Lightning's rewording of DDP's refusal of a parameter that trains and got no gradient.
DDP_UNUSED_PARAMETERS = "has parameters that were not used in producing the loss"
NAMES_SHOWN = 5
# How a traceback's last line starts: "ValueError: ".
EXCEPTION_NAME = re.compile(r"^[A-Za-z_.]*(Error|Exception): ")


def fit_error(
    exc: BaseException,
    strategy: str,
    network: nn.Module,
    encoder: Encoder,
    resumed_from: Path | None,
) -> ConfigError | None:
    """The one-line error for `exc`, raised by `trainer.fit`, or None when it is not one of those.

    Args:
        exc: what the fit raised.
        strategy: `trainer.strategy`.
        network: the network being trained.
        encoder: its modality's encoder (the example input's shapes).
        resumed_from: the checkpoint the fit resumed from, if it did.
    """
    if DDP_UNUSED_PARAMETERS in str(exc):
        return _unused_parameters_error(strategy, network, encoder)
    refusal = _checkpoint_refusal(exc) if resumed_from is not None else None
    if refusal is not None:
        return ConfigError(
            f"--resume: the checkpoint {resumed_from} does not fit the network: {refusal} "
            "(written by another mlfactory version, or edited); start a new run with another --out"
        )
    return None


def _unused_parameters_error(strategy: str, network: nn.Module, encoder: Encoder) -> ConfigError:
    """One line for DDP's refusal, naming the parameters (found on an example input)."""
    unused = parameters_outside_the_output(network, example_inputs(encoder, 2))
    more = len(unused) - NAMES_SHOWN
    which = ", ".join(unused[:NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")
    return ConfigError(
        f"trainer.strategy={strategy}: DDP stopped because parameters that train "
        f"took no part in the loss ({which or 'for some inputs'}): freeze them, or set "
        "trainer.strategy=ddp_find_unused_parameters_true"
    )


def _checkpoint_refusal(exc: BaseException) -> str | None:
    """torch's line refusing a checkpoint written for other parameters, if `exc` is that: the
    message's first line, or, from a rank of ddp_spawn, the traceback line that says it."""
    for line in str(exc).strip().splitlines():
        if any(mismatch in line for mismatch in CHECKPOINT_MISMATCHES):
            return EXCEPTION_NAME.sub("", line.strip())
    return None
