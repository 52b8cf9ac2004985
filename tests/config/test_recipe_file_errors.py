"""A recipe file's own mistakes: each is one `error:` line naming the file, the line and the key.

A duplicate key, an unknown key (with a "did you mean", as for an override), a value given for a
section and a defaults list that leads back to its own file are refused before Hydra composes;
an override of a key that a file without a defaults list leaves out says why it fails.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlfactory.cli import app
from mlfactory.config.loader import load_recipe
from tests.test_cli import assert_one_line_error

runner = CliRunner()
START = "defaults:\n  - image\n  - _self_\n"


def refused(recipe: Path, *overrides: str) -> str:
    result = runner.invoke(app, ["data", str(recipe), *overrides])
    assert_one_line_error(result, "")
    return result.output.strip()


def test_a_file_naming_itself_in_its_defaults_is_one_line(tmp_path: Path) -> None:
    mine = tmp_path / "image.yaml"
    mine.write_text(START + "data:\n  source: /tmp/x\n")
    assert refused(mine) == (
        f"error: {mine}: its defaults list names 'image', which is this file itself (a file "
        "beside it comes before the packaged recipe): rename the file, e.g. my-image.yaml"
    )


def test_recipe_files_starting_from_each_other_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("defaults:\n  - b\n  - _self_\n")
    (tmp_path / "b.yaml").write_text("defaults:\n  - a\n  - _self_\n")
    line = refused(tmp_path / "a.yaml")
    assert line.startswith(f"error: {tmp_path / 'a.yaml'}: ")
    assert "go round in a circle (a -> b -> a)" in line


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "data:\n  source: /a\n  source: /b\n",
            ":6: duplicate key data.source (first set on line 5): keep one of them",
        ),
        (
            "data:\n  sorce: img1\n",
            ":5: data.sorce: unknown key (known in data: source, ",
        ),
        ("data: /path\n", ":4: data is a section of settings, not a value: set a key inside"),
    ],
)
@pytest.mark.parametrize("start", [START, "name: x\nmodality: image\ndescription: no defaults\n"])
def test_a_recipe_files_key_mistake_reads_like_an_overrides(
    tmp_path: Path, body: str, expected: str, start: str
) -> None:
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(start + body)
    line = refused(recipe)
    assert line.startswith(f"error: {recipe}{expected}")
    if "sorce" in body:
        assert line.endswith("did you mean 'data.source'?")


def test_a_mistake_in_the_file_a_recipe_starts_from_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(START + "trainer:\n  max_epoch: 3\n")
    (tmp_path / "ours.yaml").write_text("defaults:\n  - base\n  - _self_\nname: ours\n")
    line = refused(tmp_path / "ours.yaml")
    assert line.startswith(f"error: {tmp_path / 'base.yaml'}:5: trainer.max_epoch: unknown key")


def test_overriding_a_key_a_file_without_defaults_leaves_out_says_why(tmp_path: Path) -> None:
    recipe = tmp_path / "bare.yaml"
    recipe.write_text("name: x\nmodality: image\ndata:\n  source: /tmp/x\n")
    line = refused(recipe, "trainer.max_epochs=3")
    assert line.startswith(f"error: trainer.max_epochs: {recipe} has no defaults list")
    assert "defaults: [recipe_schema, _self_]" in line


def test_a_defaults_list_without_self_is_quiet(tmp_path: Path) -> None:
    recipe = tmp_path / "quiet.yaml"
    recipe.write_text("defaults:\n  - image\nname: quiet\ndata:\n  source: /tmp/x\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_recipe(str(recipe)).name == "quiet"
    assert not [w for w in caught if "_self_" in str(w.message)]
