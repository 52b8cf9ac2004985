"""A training run needs a validation and a test split: without one it stopped with a traceback
at its first validation (Lightning's early stopping) or at the export; now one line before."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlfactory.cli import app
from mlfactory.config.loader import load_recipe
from mlfactory.data.prepare import prepare_dataset
from mlfactory.errors import DataError
from mlfactory.training.preflight import check_splits
from tests.conftest import fast_digits_overrides


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("data.val_fraction=0", "data.val_fraction=0 leaves no val split, which a training run"),
        ("data.test_fraction=0", "data.test_fraction=0 leaves no test split, which a training"),
    ],
)
def test_a_split_set_to_nothing_is_one_line_before_the_run(
    setting: str, message: str, digit_folder: Path, tmp_path: Path
) -> None:
    overrides = [*fast_digits_overrides(digit_folder, tmp_path), setting]
    result = CliRunner().invoke(
        app, ["train", "digits", *overrides, "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 2, result.output
    error = result.output.strip().splitlines()[-1]  # after the seed recipe's note
    assert error.startswith(f"error: {message}") and error.endswith("above 0")
    assert not (tmp_path / "run").exists()


def test_classes_too_small_for_a_validation_item_say_so(digit_folder: Path, tmp_path: Path) -> None:
    """Two real digits per class: each gives one to test and one to train, none to val."""
    small = tmp_path / "small"
    for label in ("3", "5", "8"):
        (small / label).mkdir(parents=True)
        for path in sorted((digit_folder / label).glob("*.png"))[:2]:
            shutil.copy(path, small / label / path.name)
    config = load_recipe("digits", fast_digits_overrides(small, tmp_path)).config
    dataset = prepare_dataset(config)
    assert dataset.split("test") and dataset.split("train") and not dataset.split("val")
    with pytest.raises(DataError) as raised:
        check_splits(dataset, config.data)
    assert str(raised.value).startswith("data.val_fraction=0.2 gave the val split no item")
    assert str(raised.value).endswith(
        "give some class at least 3 items (or raise data.max_per_class)"
    )
    whole = load_recipe("digits", fast_digits_overrides(digit_folder, tmp_path)).config
    check_splits(prepare_dataset(whole), whole.data)  # the same digits, every class whole
