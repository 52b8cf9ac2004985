"""A fit that diverges stops at the first check after it, not at the end of its epoch."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import mlflow
import pytest
import torch

from mlfactory.config.loader import load_recipe
from mlfactory.errors import ConfigError
from mlfactory.training.divergence import has_diverged
from mlfactory.training.train import train
from tests.conftest import SMALL_NETWORK, fast_digits_overrides


def test_a_loss_that_is_not_finite_is_divergence_only_with_weights_that_are_not() -> None:
    network = torch.nn.Linear(3, 2)
    assert not has_diverged(torch.tensor(0.7), network)
    # One overflowing step with finite weights: mixed precision's loss scaling skips it.
    assert not has_diverged(torch.tensor(float("inf")), network)
    with torch.no_grad():
        network.weight[0, 1] = float("nan")
    assert has_diverged(torch.tensor(float("nan")), network)
    assert not has_diverged(torch.tensor(0.7), network)  # only a loss that is not finite counts


def test_a_fit_in_float16_without_loss_scaling_stops_where_it_diverged(
    digit_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Real digits, `16-true` on a CPU: the weights turn NaN in the first steps. The fit stops at
    the first check (every logging interval: batch 10 of the epoch's 30 here) instead of
    training out the epoch, and the export refuses the weights."""
    overrides = [
        *fast_digits_overrides(digit_folder, tmp_path, epochs=2),
        *SMALL_NETWORK,
        "trainer.precision=16-true",
    ]
    with caplog.at_level(logging.INFO, "mlfactory.phase"), pytest.raises(ConfigError) as raised:
        train(load_recipe("digits", overrides), tmp_path / "run", progress=False)
    assert str(raised.value).startswith("training diverged: ")
    stops = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fit: stopped")]
    assert len(stops) == 1, stops
    stop = r"fit: stopped in epoch 1 at batch (\d+) of (\d+): training diverged"
    match = re.match(stop, stops[0])
    assert match, stops[0]
    assert int(match[1]) < int(match[2]), stops[0]
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epochs) == 1 and epochs[0].startswith("epoch 1/2: train loss nan"), epochs
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("mlfactory").experiment_id])
    assert run.data.tags["diverged_at"] == f"epoch 1, batch {match[1]}"
    assert run.info.status == "FAILED"
