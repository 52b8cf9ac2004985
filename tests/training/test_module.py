"""ClassifierModule's optimisation: the learning-rate schedule each `lr_schedule` names."""

from __future__ import annotations

import pytest
from torch import nn

from mlfactory.training.module import ClassifierModule


def learning_rates(schedule: str, epochs: int) -> list[float]:
    """The learning rate at the start of each epoch under `schedule` (lr 0.1, 10 epochs)."""
    module = ClassifierModule(
        nn.Linear(4, 3),  # type: ignore[arg-type]  # only its parameters are optimised here
        num_classes=3,
        lr=0.1,
        weight_decay=0.0,
        max_epochs=10,
        lr_schedule=schedule,
        lr_step_epochs=3,
        lr_gamma=0.5,
    )
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_step_schedule_decays_by_gamma_every_step_epochs() -> None:
    # Exact: multiplying by gamma = 0.5 only changes the exponent of 0.1.
    assert learning_rates("step", 7) == [0.1] * 3 + [0.05] * 3 + [0.025]


def test_constant_schedule_keeps_the_rate() -> None:
    assert learning_rates("constant", 5) == [0.1] * 5


def test_cosine_schedule_anneals_towards_zero_over_max_epochs() -> None:
    rates = learning_rates("cosine", 10)
    assert rates[0] == 0.1
    assert rates == sorted(rates, reverse=True)
    # Half way down the cosine. torch updates the rate recursively from the previous one: a few
    # float64 roundings (1e-16 each) per epoch, far inside rel=1e-12.
    assert rates[5] == pytest.approx(0.05, rel=1e-12)


def test_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rates("exponential", 1)
