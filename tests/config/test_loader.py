"""Recipe composition: overrides apply, and every wrong key or value is a one-line ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlfactory.config.loader import (
    list_recipes,
    load_recipe,
    load_recipe_from_dict,
    preprocessing_params,
)
from mlfactory.errors import ConfigError


def test_packaged_recipes_compose_and_validate() -> None:
    names = list_recipes()
    assert {"digits", "mushrooms"} <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.config.name == name
        assert recipe.resolved["name"] == name
        assert recipe.config.modality in {"image", "text", "audio"}


def test_overrides_reach_the_typed_config() -> None:
    recipe = load_recipe(
        "mushrooms", ["trainer.max_epochs=3", "data.source=/some/folder", "trainer.lr=0.01"]
    )
    assert recipe.config.trainer.max_epochs == 3
    assert recipe.config.trainer.lr == 0.01  # parsed from the same decimal text: exact
    assert recipe.config.data.source == "/some/folder"
    assert recipe.resolved["trainer"]["max_epochs"] == 3


def test_seed_preprocessing_values_are_kept() -> None:
    params = preprocessing_params(load_recipe("mushrooms").config)
    assert params["resize_size"] == 235
    assert params["crop_size"] == 224
    assert params["mean"] == [0.485, 0.456, 0.406]  # read from YAML, not computed: exact


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer.max_epoch=3"], "max_epoch"),
        (["nosuchgroup.key=1"], "nosuchgroup"),
        (["trainer.max_epochs=three"], "max_epochs"),
        (["trainer.batch_size=0"], "trainer.batch_size"),
        (["trainer.lr=-1"], "trainer.lr"),
        (["data.val_fraction=1.5"], "data.val_fraction"),
        (["data.val_fraction=0.6", "data.test_fraction=0.5"], "val_fraction"),
        (["modality=video"], "modality"),
        (["+preprocess.colour=1"], "preprocess.colour"),
        (["preprocess.crop_size=300"], "crop_size"),
        (["trainer.max_epochs"], "max_epochs"),
        (["trainer.lr_schedule=exponential"], "trainer.lr_schedule"),
        (["trainer.lr_step_epochs=0"], "trainer.lr_step_epochs"),
        (["trainer.lr_gamma=1.5"], "trainer.lr_gamma"),
    ],
)
def test_wrong_key_or_value_is_one_line_naming_it(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_recipe("digits", overrides)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_unknown_recipe_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown recipe 'mushroom'.*mushrooms"):
        load_recipe("mushroom")


def test_user_recipe_file(tmp_path: Path) -> None:
    path = tmp_path / "flowers.yaml"
    path.write_text(
        "defaults:\n  - recipe_schema\n  - _self_\n"
        "name: flowers\nmodality: image\ndata:\n  source: /data/flowers\n"
    )
    recipe = load_recipe(str(path), ["trainer.max_epochs=1"])
    assert recipe.config.name == "flowers"
    assert recipe.config.trainer.max_epochs == 1
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(str(tmp_path / "missing.yaml"))


def test_resolved_config_round_trips() -> None:
    recipe = load_recipe("digits", ["trainer.max_epochs=4"])
    again = load_recipe_from_dict(recipe.resolved)
    assert again.config == recipe.config
