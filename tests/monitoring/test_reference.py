"""The profile written at export: in the bundle, from the validation split, without torch."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlfactory.bundle import load_bundle
from mlfactory.data.dataset import Item, PreparedDataset
from mlfactory.monitoring.profile import (
    ARRAYS_FILE,
    META_FILE,
    MIN_REFERENCE,
    VALIDATION,
    load_profile,
)
from mlfactory.monitoring.reference import (
    model_outputs,
    profile_mb,
    record_test_split,
    reference_items,
    write_profile,
)
from mlfactory.monitoring.split_agreement import SPLITS_DISAGREE_AT, TEST_SPLIT, disagreement
from mlfactory.output import PHASE_LOGGER
from mlfactory.predictor import Predictor


def test_export_writes_a_profile_that_loads_without_torch(monitored_digits: Any) -> None:
    bundle = monitored_digits.bundle
    assert (bundle.path / ARRAYS_FILE).is_file() and (bundle.path / META_FILE).is_file()
    assert profile_mb(bundle.path) <= 5.0
    meta = json.loads((bundle.path / META_FILE).read_text())
    validation = len(monitored_digits.dataset.split("val"))
    assert (meta["source"], meta["n_reference"]) == ("validation split", validation)
    assert meta["labels"] == bundle.meta.labels
    script = textwrap.dedent(
        f"""
        import sys
        from mlfactory.monitoring.profile import load_profile
        profile = load_profile({str(bundle.path)!r})
        assert "torch" not in sys.modules, "loading a profile imported torch"
        print(profile.ood.threshold, len(profile.drift.confidence))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    threshold, reference = done.stdout.split()
    assert float(threshold) == meta["ood"]["threshold"]
    assert int(reference) == validation


def _dataset(per_split: dict[str, int]) -> PreparedDataset:
    items = [
        Item(key=f"{split}{i}", label=str(i % 2), split=split, text=f"{split} {i}")
        for split, count in per_split.items()
        for i in range(count)
    ]
    return PreparedDataset("tiny", "text", "inline", ["0", "1"], items, "fingerprint")


def test_a_small_validation_split_is_joined_by_the_test_split() -> None:
    items, source = reference_items(_dataset({"train": 50, "val": MIN_REFERENCE, "test": 5}))
    assert (len(items), source) == (MIN_REFERENCE, "validation split")
    items, source = reference_items(_dataset({"train": 50, "val": 8, "test": 12}))
    assert (len(items), source) == (20, "validation and test splits")
    assert {item.split for item in items} == {"val", "test"}


def test_a_profile_of_few_inputs_says_what_its_ood_threshold_flags(
    monitored_digits: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """6 validation digits a class: 20 held out to calibrate the OOD threshold, too few for
    1 %; the export's line says what it flags instead, and what would give 1 %."""
    folder = tmp_path / "bundle"
    shutil.copytree(monitored_digits.bundle.path, folder)
    validation = monitored_digits.dataset.split("val")
    items = [i for label in "0123456789" for i in [v for v in validation if v.label == label][:6]]
    with caplog.at_level(logging.INFO, logger=PHASE_LOGGER):
        profile = write_profile(load_bundle(folder), items, "validation split")
    assert profile is not None
    held_out = len(profile.ood.calibration_scores)
    expected = profile.ood.expected_rate
    assert held_out < 99 and expected == pytest.approx(1 / (held_out + 1))
    low, high = profile.ood.rate_range()
    assert (
        f"MB; its OOD threshold flags {expected:.1%} of in-distribution inputs on average, not "
        f"1%, and with {held_out} held out to calibrate it, this profile's rate is within "
        f"{low:.1%} to {high:.1%} (90% chance): 99 are needed for 1% (a larger validation split)"
    ) in caplog.text


def test_a_profile_whose_rate_may_reach_twice_the_rate_asked_says_what_narrows_it(
    monitored_digits: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The validation and test digits: about 120 held out, enough for 1 % on average, but one
    profile's rate may reach past 2 %; the line says a larger validation split narrows it."""
    folder = tmp_path / "bundle"
    shutil.copytree(monitored_digits.bundle.path, folder)
    items = [*monitored_digits.dataset.split("val"), *monitored_digits.dataset.split("test")]
    with caplog.at_level(logging.INFO, logger=PHASE_LOGGER):
        profile = write_profile(load_bundle(folder), items, "validation and test splits")
    assert profile is not None
    held_out = len(profile.ood.calibration_scores)
    low, high = profile.ood.rate_range()
    assert held_out >= 99 and profile.ood.expected_rate == 0.01 and high > 0.02
    assert (
        f"MB; its OOD threshold flags 1.0% of in-distribution inputs on average, and with "
        f"{held_out} held out to calibrate it, this profile's rate is within {low:.1%} to "
        f"{high:.1%} (90% chance): a larger validation split narrows it"
    ) in caplog.text


def test_a_reference_harder_than_the_test_split_is_named_at_export(
    monitored_digits: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The 40 % of the validation digits the model is least sure of, as a reference: right
    far less often than the test split (0.55 against 0.75, p = 0.002, with AVX-512 kernels;
    0.59 against 0.81 with AVX2 ones); export's line says so, and what it does, and the profile
    keeps the test split's figures for the reports' notes."""
    folder = tmp_path / "bundle"
    shutil.copytree(monitored_digits.bundle.path, folder)
    bundle = load_bundle(folder)
    validation = monitored_digits.dataset.split("val")
    raws = [item.read_bytes() for item in validation]
    probabilities = model_outputs(Predictor(bundle), raws, list(range(len(raws))))[1]
    least_sure = np.argsort(probabilities.max(axis=1))[: int(0.4 * len(validation))]
    profile = write_profile(bundle, [validation[i] for i in least_sure], VALIDATION)
    assert profile is not None and profile.accuracy is not None
    test = bundle.meta.metrics["test"]
    reference, n_ref = profile.accuracy.reference_accuracy, profile.accuracy.n_reference
    assert reference < test["accuracy"] - 0.05
    with caplog.at_level(logging.INFO, logger=PHASE_LOGGER):
        record_test_split(bundle, profile, test)
    gap = test["accuracy"] - reference
    assert (
        f"monitoring: the reference ({n_ref} inputs of the validation split) was "
        f"{reference:.3f} right and the test split ({test['split_size']}) {test['accuracy']:.3f}"
        ", further apart than chance (Fisher's exact test, p = "
    ) in caplog.text
    assert f"the estimated accuracy may read about {gap:.3f} low on traffic like" in caplog.text
    assert "(mlfactory profile BUNDLE --with-test, the two splits together, or --data SOURCE)" in (
        caplog.text
    )
    saved = load_profile(folder)
    assert saved is not None
    assert saved.meta[TEST_SPLIT] == {"accuracy": test["accuracy"], "n": test["split_size"]}
    found = disagreement(saved)
    assert found is not None and found.reads == "low" and found.p_value <= SPLITS_DISAGREE_AT


def test_splits_right_as_often_or_not_independent_say_nothing(monitored_digits: Any) -> None:
    profile = load_profile(monitored_digits.bundle.path)
    assert profile is not None and profile.accuracy is not None
    reference, n_ref = profile.accuracy.reference_accuracy, profile.accuracy.n_reference
    as_often = {**profile.meta, TEST_SPLIT: {"accuracy": reference, "n": n_ref}}
    assert disagreement(dataclasses.replace(profile, meta=as_often)) is None
    far = {**profile.meta, TEST_SPLIT: {"accuracy": reference / 2, "n": n_ref}}
    assert disagreement(dataclasses.replace(profile, meta=far)) is not None
    # a reference that holds the test split is not a second sample; an old profile has no figures
    joined = {**far, "source": "validation and test splits"}
    assert disagreement(dataclasses.replace(profile, meta=joined)) is None
    old = {key: value for key, value in profile.meta.items() if key != TEST_SPLIT}
    assert disagreement(dataclasses.replace(profile, meta=old)) is None
    for edited in ({"accuracy": "0.5", "n": n_ref}, {"accuracy": 1.5, "n": n_ref}, {"n": 0}):
        meta = {**profile.meta, TEST_SPLIT: edited}  # by hand: no note, and no failure
        assert disagreement(dataclasses.replace(profile, meta=meta)) is None
