"""Every ruled recipe value, walked through the CLI with a value it does not allow.

The invalid values are derived from the rules the schema declares (`constraints.rules`), so a
key that gains a rule is tested without touching this file, and a rule that stops being
enforced fails here. Each case must be refused by `mlfactory train` with exit code 2 and one
`error:` line naming the key, before any data is read (the data source does not exist).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlfactory.cli import app
from mlfactory.config.constraints import Rule, rules
from mlfactory.config.schema import RecipeConfig
from mlfactory.modalities import get_modality

from ..test_cli import assert_one_line_error

runner = CliRunner()
# A recipe per modality, so that each modality's preprocess keys are walked too.
RECIPE_OF = {"image": "digits", "text": "news", "audio": "birdcalls"}
MISSING_SOURCE = "data.source=/nonexistent/mlfactory-test-data"


def invalid_values(rule: Rule, kind: Any) -> list[Any]:
    """Values the rule refuses: one past each bound, or a word that is not a choice."""
    if rule.choices is not None:
        return ["not-a-choice"]
    integer = "int" in str(kind) and "float" not in str(kind)
    step = 1 if integer else 0.5
    values: list[Any] = []
    if rule.ge is not None:
        values.append(rule.ge - step)
    if rule.gt is not None:
        values.append(rule.gt)
    if rule.le is not None:
        values.append(rule.le + step)
    if rule.lt is not None:
        values.append(rule.lt)
    return [int(v) if integer else v for v in values]


def cases() -> list[tuple[str, str, Any]]:
    found = [
        ("digits", key, value)
        for key, (rule, kind) in rules(RecipeConfig).items()
        for value in invalid_values(rule, kind)
    ]
    for modality, recipe in RECIPE_OF.items():
        schema = get_modality(modality).preprocessing_class
        for key, (rule, kind) in rules(schema, "preprocess.").items():
            found += [(recipe, key, value) for value in invalid_values(rule, kind)]
    return found


CASES = cases()


def test_every_ruled_key_is_walked() -> None:
    keys = {key for _, key, _ in CASES}
    # A sample of what must be there: numbers, enums, each modality's preprocessing.
    assert {
        "seed",
        "modality",
        "data.val_fraction",
        "trainer.lr",
        "trainer.precision",
        "trainer.class_weights",
        "model.pretrained",
        "preprocess.crop_size",
        "preprocess.max_length",
        "preprocess.n_fft",
        "preprocess.clip_seconds",
    } <= keys
    assert len(CASES) >= 40


@pytest.mark.parametrize(("recipe", "key", "value"), CASES, ids=lambda v: str(v))
def test_a_value_outside_its_rule_is_one_line_and_exit_2(recipe: str, key: str, value: Any) -> None:
    result = runner.invoke(app, ["train", recipe, f"{key}={value}", MISSING_SOURCE])
    assert_one_line_error(result, key)


@pytest.mark.parametrize(
    ("recipe", "overrides", "fragment"),
    [
        ("digits", ["preprocess.crop_size=100", "preprocess.resize_size=64"], "crop_size: 100"),
        ("digits", ["data.val_fraction=0.5", "data.test_fraction=0.5"], "leaves nothing"),
        ("digits", ["preprocess.std=[0.2,0,0.2]"], "preprocess.std"),
        ("digits", ["preprocess.mean=[0.5,0.5]"], "preprocess.mean"),
        ("digits", ["trainer.devices=0"], "trainer.devices"),
        ("digits", ["trainer.strategy=ddp_fork"], "trainer.strategy=ddp_fork: processes forked"),
        ("news", ["trainer.strategy=ddp_notebook"], "use ddp (Lightning starts a process per"),
        ("digits", ["name=a/b"], "name"),
        ("digits", [f"name={'n' * 201}"], "name: 201 characters; at most 200"),
        ("digits", [f"version={'v' * 101}"], "version: 101 characters; at most 100"),
        ("birdcalls", ["preprocess.n_mels=400"], "preprocess.n_mels: 400 bands"),
        ("birdcalls", ["preprocess.clip_seconds=0.001"], "preprocess.clip_seconds"),
        ("news", ["preprocess.max_length=2"], "preprocess.max_length: 2"),
        ("digits", ["trainer.lr=fast"], "trainer.lr: 'fast' is not a number"),
        ("digits", ["trainer.max_epochs=3.5"], "trainer.max_epochs"),
        ("digits", ["trainer.max_epoch=3"], "did you mean 'trainer.max_epochs'"),
        ("digits", ["preprocess.colour=1"], "preprocess.colour: unknown key"),
        ("digits", ["~data.source"], "~data.source: data.source cannot be deleted, every"),
        ("news", ["~trainer.lr"], "~trainer.lr: trainer.lr cannot be deleted"),
        ("digits", [f"data.cache_dir={__file__}/c"], f"data.cache_dir: {__file__} is a file"),
        (
            "digits",
            ["data.cache_dir=${oc.env:NOT_SET_ANYWHERE}"],
            "data.cache_dir: the environment variable NOT_SET_ANYWHERE is not set: set it, or "
            "give a default (${oc.env:NOT_SET_ANYWHERE,...})",
        ),
    ],
)
def test_cross_field_rules_types_and_typos(
    recipe: str, overrides: list[str], fragment: str
) -> None:
    result = runner.invoke(app, ["train", recipe, *overrides, MISSING_SOURCE])
    assert_one_line_error(result, fragment)


def test_paths_with_hydra_grammar_characters_reach_the_recipe(tmp_path: Any) -> None:
    from mlfactory.config.loader import load_recipe

    odd = "~/data sets/mush(rooms), v2=[new]"
    recipe = load_recipe("digits", [f"data.source={odd}", "data.cache_dir=/tmp/a b,c"])
    assert recipe.config.data.source == str(Path(odd).expanduser())  # stored absolute
    assert recipe.config.data.cache_dir == "/tmp/a b,c"
    tricky = ["it's", "C:\\data\\x", "a\\'b\\"]
    for value in tricky:
        assert load_recipe("digits", [f"data.text_column={value}"]).config.data.text_column == value
