"""The reference profile on disk: arrays without pickle plus JSON, small, and read back whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from mlfactory.errors import BundleError
from mlfactory.monitoring import blas
from mlfactory.monitoring.accuracy import calibrate
from mlfactory.monitoring.profile import (
    ARRAYS_FILE,
    META_FILE,
    ReferenceProfile,
    build_profile,
    load_profile,
)
from mlfactory.monitoring.report import Window, check_window
from tests.monitoring.conftest import DigitOutputs, build_digit_profile

MODEL = {"name": "digits", "version": "1"}


def test_round_trip_without_pickle(
    digit_profile: ReferenceProfile, digit_outputs: DigitOutputs, tmp_path: Path
) -> None:
    digit_profile.save(tmp_path)
    with np.load(tmp_path / ARRAYS_FILE, allow_pickle=False) as arrays:
        assert all(arrays[key].dtype != object for key in arrays.files)
    loaded = load_profile(tmp_path)
    assert loaded is not None
    assert loaded.labels == digit_profile.labels
    assert loaded.temperature == digit_profile.temperature
    assert loaded.accuracy == digit_profile.accuracy is not None
    assert loaded.ood.threshold == digit_profile.ood.threshold
    held_out = digit_outputs.held_out
    np.testing.assert_allclose(
        loaded.ood.score(held_out.embeddings, held_out.early),
        digit_profile.ood.score(held_out.embeddings, held_out.early),
        rtol=1e-6,
    )
    assert loaded.ood.fingerprint() == digit_profile.ood.fingerprint()
    part = held_out.take(np.arange(200))
    assert (
        check_window(loaded, part.window(loaded), MODEL).to_json()
        == check_window(digit_profile, part.window(digit_profile), MODEL).to_json()
    )


def test_profile_is_small(digit_profile: ReferenceProfile, tmp_path: Path) -> None:
    digit_profile.save(tmp_path)
    size = sum(path.stat().st_size for path in tmp_path.iterdir())
    assert size <= 5_000_000
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["source"] == "validation split" and meta["n_reference"] == 500


def test_a_profile_does_not_depend_on_how_many_threads_numpys_blas_has(
    digit_outputs: DigitOutputs,
    monitored_digits: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Written where a server had pinned BLAS to one thread (a test process, a notebook), the
    profile's float32 products came out an ulp off the ones of a fresh process: `mlfactory
    profile` then wrote another profile from the same data. And in a process whose server had
    pinned it before other code raised the limit again, they came out on two threads."""
    saved = []
    for threads, pinned_before in ((1, False), (2, False), (2, True)):
        monkeypatch.setattr(blas, "_pinned", False)
        with threadpool_limits(limits=None, user_api="blas"):  # restores the limits after
            if pinned_before:
                blas.pin_one_thread()  # as a server in this process does
            with threadpool_limits(limits=threads, user_api="blas"):
                profile = build_digit_profile(digit_outputs, monitored_digits)
        folder = tmp_path / f"{threads}-{pinned_before}"
        folder.mkdir()
        profile.save(folder)
        with np.load(folder / ARRAYS_FILE) as arrays:
            saved.append({key: arrays[key] for key in arrays.files})
    for other in saved[1:]:
        assert other.keys() == saved[0].keys()
        for key in saved[0]:
            np.testing.assert_array_equal(other[key], saved[0][key], err_msg=key)


def test_a_bundle_without_profile_has_none(tmp_path: Path) -> None:
    assert load_profile(tmp_path) is None


def test_a_pickled_array_is_refused(digit_profile: ReferenceProfile, tmp_path: Path) -> None:
    digit_profile.save(tmp_path)
    with np.load(tmp_path / ARRAYS_FILE, allow_pickle=False) as saved:
        arrays = {key: saved[key] for key in saved.files}
    arrays["ood.class_means"] = np.array([{"code": "would run on load"}], dtype=object)
    np.savez(tmp_path / ARRAYS_FILE, **arrays)  # written with pickle, as an attacker would
    with pytest.raises(BundleError, match="`mlfactory profile BUNDLE` writes a new one"):
        load_profile(tmp_path)


def test_a_profile_written_before_the_accuracy_threshold_estimates_with_cbpe(
    digit_profile: ReferenceProfile, digit_outputs: DigitOutputs, tmp_path: Path
) -> None:
    digit_profile.save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    del meta["accuracy"]  # as the first release wrote it
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    loaded = load_profile(tmp_path)
    assert loaded is not None and loaded.accuracy is None
    held_out = digit_outputs.held_out
    window = Window(held_out.embeddings, held_out.probabilities, held_out.summaries)
    accuracy = check_window(loaded, window, MODEL).to_json()["accuracy"]
    assert accuracy["estimated_method"] == "cbpe"
    calibrated = calibrate(held_out.probabilities, loaded.temperature).max(axis=1)
    assert accuracy["estimated"] == pytest.approx(float(calibrated.mean()))


def test_a_newer_format_is_refused(digit_profile: ReferenceProfile, tmp_path: Path) -> None:
    digit_profile.save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    meta["format_version"] = 99
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="newer"):
        load_profile(tmp_path)


def test_build_profile_refuses_what_it_cannot_use(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    ref = digit_outputs.reference
    labels = digit_profile.labels
    with pytest.raises(ValueError, match="differ in length"):
        build_profile(ref.embeddings, ref.probabilities[:-1], ref.labels, ref.summaries, labels)
    with pytest.raises(ValueError, match="not among the bundle's labels: cat"):
        build_profile(
            ref.embeddings, ref.probabilities, ["cat", *ref.labels[1:]], ref.summaries, labels
        )
    with pytest.raises(ValueError, match="at least 20"):
        build_profile(
            ref.embeddings[:10], ref.probabilities[:10], ref.labels[:10], ref.summaries[:10], labels
        )
