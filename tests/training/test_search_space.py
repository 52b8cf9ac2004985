"""Hydra's sweep syntax turned into Optuna distributions (as hydra-optuna-sweeper reads it)."""

from __future__ import annotations

import re

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from mlfactory.errors import ConfigError
from mlfactory.training.search_space import parse_search_space


def test_each_sweep_form_and_the_fixed_overrides() -> None:
    space = parse_search_space(
        [
            "trainer.lr=tag(log,interval(1e-4,1e-2))",
            "trainer.weight_decay=interval(0,0.1)",
            "trainer.batch_size=choice(16,32)",
            "trainer.lr_schedule=cosine,step",
            "trainer.max_epochs=range(2,9,3)",
            "model.dropout=range(0.1,0.5,0.1)",
            "seed=7",
            "data.source=dvc:data/photos@v1",
        ]
    )
    assert space.fixed == ["seed=7", "data.source=dvc:data/photos@v1"]
    assert space.distributions == {
        "trainer.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "trainer.weight_decay": FloatDistribution(0.0, 0.1),
        "trainer.batch_size": CategoricalDistribution([16, 32]),
        "trainer.lr_schedule": CategoricalDistribution(["cosine", "step"]),
        # The end of a range is left out, as in Python and Hydra: 2, 5, 8.
        "trainer.max_epochs": IntDistribution(2, 8, step=3),
        "model.dropout": FloatDistribution(0.1, 0.4, step=0.1),
    }
    assert space.describe()["trainer.lr"] == "log 0.0001 to 0.01"
    assert space.describe()["trainer.max_epochs"] == "2 to 8 step 3"
    assert "trainer.batch_size=16" in space.examples()


def test_each_value_of_each_choice_is_one_variant_of_the_examples() -> None:
    space = parse_search_space(
        [
            "trainer.lr=interval(1e-4,1e-2)",
            "model.backbone=choice(efficientnet_lite0,resnet18,mobilenetv3_small_100)",
            "model.freeze_backbone=choice(true,false)",
            "data.max_per_class=choice(100,300)",
        ]
    )
    base = [
        "trainer.lr=0.0001",
        "model.backbone=efficientnet_lite0",
        "model.freeze_backbone=true",
        "data.max_per_class=100",
    ]
    assert space.variants() == [
        base,
        [base[0], "model.backbone=resnet18", *base[2:]],
        [base[0], "model.backbone=mobilenetv3_small_100", *base[2:]],
        [*base[:2], "model.freeze_backbone=false", base[3]],
        [*base[:3], "data.max_per_class=300"],
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_epochs=3"], "nothing to sweep"),
        (["trainer.lr=interval(0.1,0.01)"], "an interval needs start < end"),
        (["trainer.lr=tag(log,interval(0,1))"], "both above 0 for log"),
        (["trainer.max_epochs=range(3,3)"], "the range is empty"),
        (["trainer.lr=choice(0.1,0.2)", "trainer.lr=choice(0.3)"], "swept twice"),
        (["trainer.lr=choice(0.1,"], "trainer.lr=choice(0.1,: no viable alternative at input"),
        (
            ["data.max_per_class=choice(null,300)"],
            "choice() cannot hold null; list the values without it: data.max_per_class=null,300",
        ),
    ],
)
def test_mistakes_are_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        parse_search_space(overrides)
    assert "\n" not in str(caught.value)
