"""A bundle's stored recipe composed again (`mlfactory train TARGET`): the same recipe as the
training that made the bundle, new overrides on top, and one-line errors for what is not a
bundle with a recipe."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from mlfactory.bundle import META_FILE, load_bundle, write_meta
from mlfactory.bundle_recipe import stored_recipe_file
from mlfactory.config.loader import SCHEMA_NAME, load_recipe
from mlfactory.errors import ConfigError
from tests.serving.tiny_bundles import tiny_bundle

# What the earlier training was given on top of the packaged recipe: the bundle keeps it.
TRAINED_WITH = ["data.max_per_class=7", "trainer.lr=0.0005", "model.backbone=resnet18", "version=3"]


def bundle_of(folder: Path, overrides: list[str]) -> Path:
    """A real (tiny) bundle whose `bundle.json` stores the digits recipe as trained with
    `overrides`, as an export writes it."""
    recipe = load_recipe("digits", overrides)
    path = tiny_bundle(folder, "image")
    write_meta(path, replace(load_bundle(path).meta, config=recipe.resolved))
    return path


def test_a_bundles_recipe_is_the_trained_one_with_new_overrides_on_top(tmp_path: Path) -> None:
    bundle = bundle_of(tmp_path / "run" / "bundle", TRAINED_WITH)
    trained = load_recipe("digits", TRAINED_WITH)

    again = load_recipe(str(bundle))
    assert again.reference == str(bundle)
    # the same recipe, but a new model: its version is numbered anew, or set again
    assert again.resolved == {**trained.resolved, "version": None}
    assert load_recipe(str(bundle), ["version=4"]).config.version == "4"

    source = tmp_path / "labelled data"  # a path Hydra would parse: quoted as for any recipe
    newer = load_recipe(str(bundle), [f"data.source={source}", "trainer.max_epochs=1"])
    assert newer.config.data.source == str(source) and newer.config.trainer.max_epochs == 1
    assert newer.config.trainer.lr == 0.0005 and newer.config.data.max_per_class == 7
    assert newer.config.model.backbone == "resnet18"
    # the run folder and bundle.json name the same bundle
    for target in (tmp_path / "run", bundle / META_FILE):
        assert load_recipe(str(target)).resolved == again.resolved


def test_the_stored_recipe_file_is_removed_after_composing(tmp_path: Path) -> None:
    bundle = bundle_of(tmp_path / "bundle", TRAINED_WITH)
    with stored_recipe_file(str(bundle), SCHEMA_NAME) as path:
        assert path.read_text(encoding="utf-8").startswith(f"defaults:\n- {SCHEMA_NAME}\n")
    assert not path.parent.exists()


def test_overrides_of_a_bundles_recipe_are_checked_as_any(tmp_path: Path) -> None:
    bundle = bundle_of(tmp_path / "bundle", [])
    with pytest.raises(ConfigError, match=re.escape("did you mean 'trainer.max_epochs'")):
        load_recipe(str(bundle), ["trainer.max_epoch=1"])
    with pytest.raises(ConfigError, match=re.escape("trainer.lr")):
        load_recipe(str(bundle), ["trainer.lr=-1"])


def test_what_is_not_a_bundle_with_a_recipe_is_one_line(tmp_path: Path) -> None:
    no_recipe = tiny_bundle(tmp_path / "tiny", "image")  # bundle.json without config
    with pytest.raises(ConfigError, match="the bundle stores no recipe") as stored_none:
        load_recipe(str(no_recipe))
    not_a_bundle = tmp_path / "empty"
    not_a_bundle.mkdir()
    with pytest.raises(ConfigError, match="neither a bundle folder nor a run folder") as empty:
        load_recipe(str(not_a_bundle))
    # a folder of data given as the recipe: the way to train on it
    assert str(empty.value).endswith(f"mlfactory train image|text|audio data.source={not_a_bundle}")
    with pytest.raises(ConfigError, match="or a bundle to train again") as unknown:
        load_recipe("digitz")
    for error in (stored_none, empty, unknown):
        assert "\n" not in str(error.value)
    assert "did you mean 'digits'" in str(unknown.value)
