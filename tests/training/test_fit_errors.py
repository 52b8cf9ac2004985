"""Which errors of a fit become one line, on the real digits network and torch's own errors.
The fits themselves are in test_ddp.py (DDP's refusal) and test_train.py (a resumed
checkpoint that does not fit)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.multiprocessing import ProcessRaisedException

from mlfactory.config.loader import load_recipe, preprocessing_params
from mlfactory.modalities import Encoder
from mlfactory.training.backbones import build_classifier, training_encoder
from mlfactory.training.fit_errors import DDP_UNUSED_PARAMETERS, fit_error

from ..conftest import SMALL_NETWORK

# How Lightning's refusal reads when a rank of ddp_spawn raised it (torch.multiprocessing).
SPAWNED = (
    "\n\n-- Process 0 terminated with the following error:\nTraceback (most recent call last):\n"
    '  File "lightning/pytorch/strategies/ddp.py", line 1, in training_step\n'
    f"RuntimeError: It looks like your LightningModule {DDP_UNUSED_PARAMETERS}. ...\n"
)


@pytest.fixture
def digits_network(tmp_path: Path) -> tuple[nn.Module, Encoder]:
    config = load_recipe("digits", SMALL_NETWORK).config
    encoder, _ = training_encoder(config, preprocessing_params(config), tmp_path)
    return build_classifier(config, 10), encoder


def mismatch() -> RuntimeError:
    """torch's refusal of weights written for another network."""
    with pytest.raises(RuntimeError) as raised:
        nn.Linear(4, 2).load_state_dict(nn.Linear(4, 3).state_dict())
    return raised.value


def test_ddp_refusal_names_at_most_five_parameters(
    digits_network: tuple[nn.Module, Encoder],
) -> None:
    network, encoder = digits_network
    for i in range(4):
        network.add_module(f"side_{i}", nn.Linear(2, 2))
    for exc in (RuntimeError(SPAWNED), ProcessRaisedException(SPAWNED, 0, 1234)):
        error = fit_error(exc, "ddp_spawn", network, encoder, resumed_from=None)
        assert error is not None
        shown = "side_0.weight, side_0.bias, side_1.weight, side_1.bias, side_2.weight and 3 more"
        assert str(error).startswith("trainer.strategy=ddp_spawn: DDP stopped because ")
        assert f"took no part in the loss ({shown}): freeze them" in str(error)


def test_a_checkpoint_that_does_not_fit_is_named_only_when_resuming(
    digits_network: tuple[nn.Module, Encoder], tmp_path: Path
) -> None:
    network, encoder = digits_network
    last = tmp_path / "last.ckpt"
    error = fit_error(mismatch(), "auto", network, encoder, resumed_from=last)
    assert error is not None
    assert str(error).startswith(f"--resume: the checkpoint {last} does not fit the network: ")
    assert "\n" not in str(error)
    # Under ddp_spawn the rank's refusal arrives as its traceback's text: the same line.
    spawned = ProcessRaisedException(
        "\n\n-- Process 0 terminated with the following error:\nTraceback (most recent call last):"
        '\n  File "torch/optim/optimizer.py", line 969, in load_state_dict\n    raise ValueError(\n'
        "ValueError: loaded state dict contains a parameter group that doesn't match the size of "
        "optimizer's group\n",
        0,
        1234,
    )
    error = fit_error(spawned, "ddp_spawn", network, encoder, resumed_from=last)
    assert str(error) == (
        f"--resume: the checkpoint {last} does not fit the network: loaded state dict contains a "
        "parameter group that doesn't match the size of optimizer's group (written by another "
        "mlfactory version, or edited); start a new run with another --out"
    )
    # A new run, or an error that is no one's fix, is raised as it is.
    assert fit_error(mismatch(), "auto", network, encoder, resumed_from=None) is None
    with pytest.raises(RuntimeError) as raised:
        torch.zeros(2, 3) @ torch.zeros(2, 3)
    assert fit_error(raised.value, "auto", network, encoder, resumed_from=last) is None
