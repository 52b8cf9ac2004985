"""`mlfactory compare`: two real digits bundles on the same held-out digits, item by item;
the items a bundle trained on left out; one-line errors."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import binomtest
from typer.testing import CliRunner

from mlfactory.bundle import load_bundle
from mlfactory.bundle_recipe import recipe_dataset
from mlfactory.cli import app
from mlfactory.compare_command import compare_targets
from mlfactory.errors import DataError
from mlfactory.predictor import Predictor
from mlfactory.training.train import TrainResult
from tests.conftest import MONITORED_PER_CLASS, write_digit_folder
from tests.serving.tiny_bundles import tiny_bundle
from tests.test_cli import assert_one_line_error

runner = CliRunner()


def right_answers(bundle: Path, files: list[Path]) -> np.ndarray:
    """Whether the bundle predicts each file's folder name, asked one file at a time."""
    predictor = Predictor.from_path(bundle)
    labels = [predictor.predict([f.read_bytes()])[0].label for f in files]
    return np.asarray([label == f.parent.name for label, f in zip(labels, files, strict=True)])


def test_two_bundles_on_the_same_unseen_digits(
    trained_digits: TrainResult, monitored_digits: Any, tmp_path: Path
) -> None:
    weak, strong = trained_digits.bundle.path, monitored_digits.bundle.path
    folder = write_digit_folder(tmp_path / "held-out", 6, offset=MONITORED_PER_CLASS + 20)
    files = sorted(folder.glob("*/*.png"))
    weak_right, strong_right = right_answers(weak, files), right_answers(strong, files)

    result = compare_targets(str(weak), str(strong), str(folder))
    pair = result.comparison
    assert pair.items == len(files) == 60 and result.left_out == 0  # neither saw them
    assert pair.only_baseline_right == int(np.sum(weak_right & ~strong_right))
    assert pair.only_candidate_right == int(np.sum(strong_right & ~weak_right))
    assert pair.baseline_accuracy == pytest.approx(weak_right.mean())
    assert pair.candidate_accuracy == pytest.approx(strong_right.mean())
    discordant = pair.only_baseline_right + pair.only_candidate_right
    assert pair.p_value == pytest.approx(binomtest(pair.only_candidate_right, discordant).pvalue)

    shown = runner.invoke(app, ["compare", str(weak), str(strong), "--data", str(folder)])
    assert shown.exit_code == 0, shown.output
    assert f"on 60 items: {folder} (all of its items)" in shown.output
    assert f"the candidate: {pair.verdict.upper()} (exact McNemar test" in shown.output
    as_json = runner.invoke(
        app, ["compare", str(strong), str(weak), "--data", str(folder), "--json"]
    )
    report = json.loads(as_json.output)
    assert report["baseline"]["accuracy"] == pytest.approx(pair.candidate_accuracy)
    assert report["only_candidate_right"] == pair.only_baseline_right
    assert report["data"] == {"source": f"{folder} (all of its items)", "items": 60, "left_out": 0}
    assert set(report) == {
        "baseline", "candidate", "data", "only_baseline_right", "only_candidate_right",
        "difference", "difference_ci", "p_value", "level", "verdict",
    }  # fmt: skip
    # the model of 40 digits a class against that of 100: worse by far more than chance
    assert report["verdict"] == "worse" and report["p_value"] < 0.01
    low, high = report["difference_ci"]
    assert low < report["difference"] < high < 0
    # a gate for promotion: exit code 1 only when the candidate is significantly worse
    gate = ["compare", "--data", str(folder), "--fail-if-worse"]
    assert runner.invoke(app, [*gate, str(strong), str(weak)]).exit_code == 1
    assert runner.invoke(app, [*gate, str(weak), str(strong)]).exit_code == 0


def test_data_with_some_of_the_labels_is_compared_on_those(
    trained_digits: TrainResult, monitored_digits: Any, tmp_path: Path
) -> None:
    """A week of labelled traffic that saw no 5 to 9 (`mlfactory collect`'s output, say)."""
    weak, strong = trained_digits.bundle.path, monitored_digits.bundle.path
    folder = write_digit_folder(tmp_path / "held-out", 6, offset=MONITORED_PER_CLASS + 20)
    for digit in "56789":
        shutil.rmtree(folder / digit)
    files = sorted(folder.glob("*/*.png"))
    result = compare_targets(str(weak), str(strong), str(folder))
    assert result.comparison.items == len(files) == 30
    strong_right = right_answers(strong, files)
    assert result.comparison.candidate_accuracy == pytest.approx(strong_right.mean())
    extra = write_digit_folder(tmp_path / "extra", 6, offset=MONITORED_PER_CLASS + 40)
    shutil.move(extra / "4", folder / "x")  # other digits, a label neither bundle knows
    shown = runner.invoke(app, ["compare", str(weak), str(strong), "--data", str(folder)])
    assert_one_line_error(shown, "labels ['0', '1', '2', '3', '4', 'x'], the bundle")


def test_digits_a_bundle_trained_on_are_left_out(
    trained_digits: TrainResult, monitored_digits: Any, tmp_path: Path
) -> None:
    # the first digits of each class: each bundle trained on some of them
    folder = write_digit_folder(tmp_path / "seen", 8)
    files = sorted(folder.glob("*/*.png"))
    trained_keys = {
        item.key
        for result in (trained_digits, monitored_digits)
        for item in result.dataset.split("train")
    }
    seen = [f for f in files if hashlib.sha256(f.read_bytes()).hexdigest() in trained_keys]
    assert 0 < len(seen) < len(files)
    result = compare_targets(
        str(trained_digits.bundle.path), str(monitored_digits.bundle.path), str(folder)
    )
    assert result.left_out == len(seen) and result.comparison.items == len(files) - len(seen)


def test_the_candidates_own_test_split_by_default(
    trained_digits: TrainResult, monitored_digits: Any
) -> None:
    result = compare_targets(str(monitored_digits.bundle.path), str(trained_digits.bundle.path))
    test_split = trained_digits.dataset.split("test")
    assert "the test split of digits" in result.source
    assert result.comparison.items + result.left_out == len(test_split)


def test_what_cannot_be_compared_is_one_line(trained_digits: TrainResult, tmp_path: Path) -> None:
    digits = str(trained_digits.bundle.path)
    pets = str(tiny_bundle(tmp_path / "pets", "image"))  # cat, dog
    assert_one_line_error(
        runner.invoke(app, ["compare", digits, pets]),
        "the bundles have other labels: only digits 1 has 0, 1, 2, 3, 4, ...; only tiny-image "
        "1.0.0 has cat, dog: compare needs the same labels in the same order",
    )
    swapped = tiny_bundle(tmp_path / "swapped", "image")
    meta = json.loads((swapped / "bundle.json").read_text())
    (swapped / "bundle.json").write_text(json.dumps({**meta, "labels": ["dog", "cat"]}))
    assert_one_line_error(
        runner.invoke(app, ["compare", pets, str(swapped)]),
        "the bundles have the same labels in another order",
    )
    assert_one_line_error(
        runner.invoke(app, ["compare", digits, digits, "--level", "1"]),
        "--level 1.0: use a number between 0 and 1",
    )
    assert_one_line_error(
        runner.invoke(app, ["compare", digits, str(tmp_path / "nowhere")]),
        "no such bundle folder",
    )
    assert_one_line_error(  # in words of the option given, not of the recipe's data.source
        runner.invoke(app, ["compare", digits, digits, "--data", str(tmp_path / "nosuch")]),
        f"--data '{tmp_path / 'nosuch'}' does not exist: give --data an existing folder",
    )


def test_a_bundle_whose_data_is_gone_keeps_its_items_with_a_warning(
    trained_digits: TrainResult,
    monitored_digits: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(monitored_digits.bundle.path, moved)
    bundle = load_bundle(moved)
    bundle.meta.config["data"]["source"] = str(tmp_path / "gone")
    bundle.save_meta()
    folder = write_digit_folder(tmp_path / "seen", 8)
    with caplog.at_level(logging.WARNING):
        result = compare_targets(str(trained_digits.bundle.path), str(moved), str(folder))
    assert "compare: cannot prepare the data digits" in caplog.text
    # only the items the other bundle trained on are left out
    trained_keys = {item.key for item in trained_digits.dataset.split("train")}
    files = sorted(folder.glob("*/*.png"))
    seen = [f for f in files if hashlib.sha256(f.read_bytes()).hexdigest() in trained_keys]
    assert result.left_out == len(seen) and result.comparison.items == len(files) - len(seen)
    # and at another level, the interval says which
    shown = runner.invoke(
        app, ["compare", str(trained_digits.bundle.path), str(moved), "--data", str(folder),
              "--level", "0.1"]
    )  # fmt: skip
    assert "(90% interval" in shown.output and "level 0.1)" in shown.output


def test_a_baseline_without_a_recipe_keeps_its_items_with_a_warning(
    trained_digits: TrainResult, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As the docs say of a bundle whose own data cannot be prepared again: a warning, not an
    error, and none of the items is left out for it."""
    bare = tmp_path / "bare"
    shutil.copytree(trained_digits.bundle.path, bare)
    bundle = load_bundle(bare)
    bundle.meta.config = {}
    bundle.save_meta()
    with caplog.at_level(logging.WARNING):
        result = compare_targets(str(bare), str(trained_digits.bundle.path))
    assert f"the bundle {bare} stores no recipe" in caplog.text
    assert result.left_out == 0  # the candidate's test split: it trained on none of it
    assert result.comparison.items == len(trained_digits.dataset.split("test"))


def test_data_of_one_class_is_compared_on_it_and_still_not_trained_on(
    trained_digits: TrainResult, monitored_digits: Any, tmp_path: Path
) -> None:
    """A week of collected traffic that saw one class: only scored, so one class will do; the
    recipe still refuses it as data to train on, from the cache too."""
    weak, strong = trained_digits.bundle.path, monitored_digits.bundle.path
    folder = write_digit_folder(tmp_path / "held-out", 6, offset=MONITORED_PER_CLASS + 20)
    for digit in "012345678":
        shutil.rmtree(folder / digit)
    result = compare_targets(str(weak), str(strong), str(folder))
    assert result.comparison.items == 6 and result.left_out == 0
    nines = right_answers(strong, sorted(folder.glob("*/*.png")))
    assert result.comparison.candidate_accuracy == pytest.approx(nines.mean())
    with pytest.raises(DataError, match="yields only 1 class"):
        recipe_dataset(load_bundle(strong), str(folder))


def test_the_candidates_class_limits_do_not_apply_to_data(
    trained_digits: TrainResult, monitored_digits: Any, tmp_path: Path
) -> None:
    """`data.max_per_class` and `data.min_per_class` chose what the candidate trained on: all
    of --data is compared on, more items a class than the cap or fewer than the minimum."""
    candidate = tmp_path / "candidate"
    shutil.copytree(trained_digits.bundle.path, candidate)
    folder = write_digit_folder(tmp_path / "held-out", 6, offset=MONITORED_PER_CLASS + 20)
    baseline = str(monitored_digits.bundle.path)
    for limits in ({"max_per_class": 3}, {"max_per_class": 3, "min_per_class": 20}):
        bundle = load_bundle(candidate)
        bundle.meta.config["data"].update(limits)
        bundle.save_meta()
        shown = runner.invoke(app, ["compare", baseline, str(candidate), "--data", str(folder)])
        assert shown.exit_code == 0, shown.output
        said = " ".join(shown.output.split())
        assert f"on 60 items: {folder} (all of its items)" in said, limits


def test_bundles_of_other_modalities_are_one_line_first(tmp_path: Path) -> None:
    """Same labels, image against text: said before either bundle reads the data."""
    image = tiny_bundle(tmp_path / "image", "image")
    text = tiny_bundle(tmp_path / "text", "text")
    bundle = load_bundle(text)
    bundle.meta.labels = load_bundle(image).meta.labels
    bundle.save_meta()
    result = runner.invoke(app, ["compare", str(image), str(text), "--data", str(tmp_path)])
    assert_one_line_error(result, "the bundles are of other modalities (")
    assert "image" in result.output and "text)" in result.output
