"""Whole reports on windows of a real digits bundle's traffic: quiet without shift, loud with."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from PIL import ImageOps
from scipy.special import betaln

from mlfactory.monitoring.drift import INSUFFICIENT, KINDS, exceedance_check
from mlfactory.monitoring.ood import OodScorer
from mlfactory.monitoring.profile import ReferenceProfile, build_profile, label_indices
from mlfactory.monitoring.report import (
    NO_LOGGED_SCORES,
    MonitorSettings,
    Window,
    check_window,
    window_scores,
)
from tests.monitoring.conftest import DigitOutputs, Outputs

MODEL = {"name": "digits", "version": "1"}


def _window(outputs: Outputs, size: int, seed: int, profile: ReferenceProfile) -> Window:
    rows = np.random.default_rng(seed).choice(len(outputs), size, replace=False)
    return outputs.take(rows).window(profile)


def _drifted(report_json: dict[str, object]) -> set[str]:
    checks = report_json["checks"]
    assert isinstance(checks, list)
    return {check["name"] for check in checks if check["drift"]}


def test_held_out_digits_raise_no_alarm(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    """40 seeded windows of 100 unseen digits from the reference's distribution."""
    alarms = [
        check_window(
            digit_profile, _window(digit_outputs.held_out, 100, seed, digit_profile), MODEL
        ).drift
        for seed in range(40)
    ]
    assert sum(alarms) <= 2  # nominal 5 % of 40 windows; measured 0


def test_rotated_and_inverted_digits_drift(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    rotated = digit_outputs.transform(lambda image: image.rotate(90))
    report = check_window(digit_profile, _window(rotated, 100, 0, digit_profile), MODEL).to_json()
    assert report["drift"] is True and report["status"] == "drift"
    assert {"embedding", "ood_score", "predicted_label"} <= _drifted(report)
    inverted = digit_outputs.transform(ImageOps.invert)
    report = check_window(digit_profile, _window(inverted, 100, 0, digit_profile), MODEL).to_json()
    assert {"brightness_mean", "embedding", "ood_score"} <= _drifted(report)


def test_a_label_prior_shift_is_seen_in_the_predicted_labels(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    low = np.flatnonzero(np.isin(digit_outputs.held_out.labels, ["0", "1", "2", "3", "4"]))
    report = check_window(
        digit_profile, _window(digit_outputs.held_out.take(low), 100, 0, digit_profile), MODEL
    )
    assert "predicted_label" in _drifted(report.to_json())


def test_the_json_contract(digit_outputs: DigitOutputs, digit_profile: ReferenceProfile) -> None:
    held_out = digit_outputs.held_out.take(np.arange(120))
    start = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    truth: list[str | None] = [
        label if i % 3 == 0 else None for i, label in enumerate(held_out.labels)
    ]
    window = held_out.window(
        digit_profile,
        timestamps=[start + timedelta(seconds=i) for i in range(120)],
        true_labels=truth,
    )
    report = json.loads(json.dumps(check_window(digit_profile, window, MODEL).to_json()))
    assert report["model"] == MODEL
    assert report["window"] == {
        "from": "2026-11-29T12:00:00+00:00",
        "to": "2026-11-29T12:01:59+00:00",
        "n": 120,
    }
    assert isinstance(report["drift"], bool)
    for check in report["checks"]:
        assert {"name", "kind", "statistic", "p_value", "drift"} <= set(check)
        assert check["kind"] in KINDS
    assert {c["kind"] for c in report["checks"]} == set(KINDS)
    assert report["ood"]["threshold"] == digit_profile.ood.threshold
    assert report["ood"]["expected"] == digit_profile.ood.fpr == 0.01
    assert 0.0 <= report["ood"]["fraction"] <= 1.0
    accuracy = report["accuracy"]
    low, high = accuracy["estimated_ci"]
    assert low <= accuracy["estimated"] <= high
    assert accuracy["estimated_method"] == "atc"  # the profile holds its threshold
    # the mean raw confidence to read the estimate against, the window's and the reference's
    assert accuracy["mean_confidence"] == float(held_out.probabilities.max(axis=1).mean())
    assert accuracy["reference_confidence"] == digit_profile.meta["reference_confidence"]
    predicted = held_out.probabilities.argmax(axis=1)[::3]
    assert accuracy["labelled"] == 40
    assert accuracy["live"] == np.mean(predicted == np.array(held_out.labels[::3], dtype=int))


def test_a_small_window_is_insufficient_data(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    report = check_window(
        digit_profile, _window(digit_outputs.held_out, 12, 0, digit_profile), MODEL
    )
    assert report.status == INSUFFICIENT and report.drift is False
    assert {check.status for check in report.checks} <= {INSUFFICIENT, "no variation"}
    held_out = digit_outputs.held_out
    empty = Window(held_out.embeddings[:0], held_out.probabilities[:0], [])
    report = check_window(digit_profile, empty, MODEL, MonitorSettings(min_samples=5))
    document = report.to_json()
    assert document["window"]["n"] == 0 and document["status"] == INSUFFICIENT
    assert document["ood"]["fraction"] is None and document["accuracy"]["estimated"] is None
    assert document["accuracy"]["mean_confidence"] is None


def test_logged_ood_scores_are_used_as_given(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    window = _window(digit_outputs.held_out, 50, 0, digit_profile)
    window.ood_scores = np.full(50, digit_profile.ood.threshold + 1.0)
    report = check_window(digit_profile, window, MODEL)
    assert report.ood_fraction == 1.0


def test_more_inputs_above_the_threshold_than_chance_allows(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    """A tenth of foreign inputs (inverted digits) among held-out digits is more than chance."""
    ood = digit_profile.ood
    held_out = ood.score(digit_outputs.held_out.embeddings, digit_outputs.held_out.early)
    inverted_outputs = digit_outputs.transform(ImageOps.invert)
    inverted = ood.score(inverted_outputs.embeddings, inverted_outputs.early)
    tenth = len(held_out) // 10
    mixed = np.concatenate([held_out[tenth:], inverted[:tenth]])
    for scores, drifts in ((held_out, False), (mixed, True)):
        check = exceedance_check(
            "ood_fraction", "embedding", ood.calibration_scores, ood.threshold, scores
        )
        assert check.p_value_raw is not None
        # 150 calibration scores leave the threshold itself uncertain: the exact test allows
        # for it, and still rejects chance for a tenth of inputs that are mostly above it.
        assert (check.p_value_raw < 0.05) is drifts
        cut = ood.calibration_scores[ood.calibration_scores <= ood.threshold].max()
        above = int(np.sum(scores > cut))
        assert check.detail.startswith(f"{above} of {len(scores)} above {cut:.4g} (the ")


def test_a_window_wholly_above_the_cut_gets_its_tiny_p_value_not_zero(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    """Every input of a window of inverted digits above the cut: the p-value is the beta-binomial
    probability that all m are, B(m + a, b) / B(a, b), far below 1e-16, where 1 - cdf gives 0."""
    ood = digit_profile.ood
    inverted_outputs = digit_outputs.transform(ImageOps.invert)
    inverted = ood.score(inverted_outputs.embeddings, inverted_outputs.early)
    ordered = np.sort(ood.calibration_scores)
    k = int(np.searchsorted(ordered, np.float32(ood.threshold), side="right"))
    window = inverted[inverted > ordered[k - 1]][:120]
    m, a, b = len(window), len(ordered) - k + 1, k
    assert m == 120
    check = exceedance_check(
        "ood_fraction", "embedding", ood.calibration_scores, ood.threshold, window
    )
    exact = float(np.exp(betaln(m + a, b) - betaln(a, b)))
    assert 0.0 < exact < 1e-16
    assert check.p_value_raw == pytest.approx(exact, rel=1e-9, abs=0.0)
    assert check.statistic == 1.0


def test_a_threshold_stored_rounded_up_is_still_the_cut(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    """With fewer calibration scores than 1 / fpr the threshold is their largest, in float64;
    the profile keeps the scores in float32, which can round it up past the threshold. The cut
    is still that score, with its 1 / (n + 1) expected, not the score below it."""
    ood = digit_profile.ood
    stored = np.sort(ood.calibration_scores)
    assert stored.dtype == np.float32
    largest = float(stored[-1])
    threshold = float(np.nextafter(largest, -np.inf))  # the float64 score that rounded up
    assert np.float32(threshold) == stored[-1] and threshold < largest
    scores = ood.score(digit_outputs.held_out.embeddings, digit_outputs.held_out.early)
    check = exceedance_check("ood_fraction", "embedding", stored, threshold, scores)
    n = len(stored)
    above = int(np.sum(scores > largest))
    cut = f"{above} of {len(scores)} above {largest:.4g} (the calibration score at the threshold)"
    assert check.detail == f"{cut}; {1 / (n + 1):.1%} expected"


def test_the_expected_ood_share_is_the_one_the_threshold_gives(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    """A profile of a small validation split (16 digits a class, as the demo's 18) has fewer
    calibration scores than 1 / fpr: the report, its notes and the exceedance check all expect
    the 1 / (n + 1) its threshold lets through, not the 1 % it was asked for."""
    reference = digit_outputs.reference
    indices = label_indices(reference.labels, digit_profile.labels)
    rows = np.concatenate([np.flatnonzero(indices == c)[:16] for c in range(10)])
    assert reference.early is not None
    scorer = OodScorer.fit(
        reference.embeddings[rows], indices[rows], early_features=reference.early[rows]
    )
    profile = replace(digit_profile, ood=scorer)
    expected = 1 / (len(scorer.calibration_scores) + 1)
    inverted = digit_outputs.transform(ImageOps.invert)
    report = check_window(profile, _window(inverted, 100, 0, profile), MODEL).to_json()
    assert report["ood"]["expected"] == pytest.approx(expected) and expected > 0.015
    (check,) = [c for c in report["checks"] if c["name"] == "ood_fraction"]
    assert check["detail"].endswith(f"; {expected:.1%} expected")
    assert any(f"out of distribution ({expected:.0%} expected)" in n for n in report["notes"])


def test_a_window_logged_without_ood_scores_still_gets_every_other_check(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    """This model's score reads its early features, which the log does not keep: a window
    without logged scores cannot have them recomputed, and says so."""
    part = digit_outputs.held_out.take(np.arange(100))
    report = check_window(
        digit_profile, Window(part.embeddings, part.probabilities, part.summaries), MODEL
    )
    by_name = {check.name: check for check in report.checks}
    for name in ("ood_score", "ood_fraction"):
        assert by_name[name].status == INSUFFICIENT and by_name[name].detail == NO_LOGGED_SCORES
    assert report.ood_fraction is None
    assert by_name["embedding"].tested and by_name["confidence"].tested


def test_scores_of_another_scorer_are_computed_again_from_the_embedding(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    """A profile whose score reads the embedding alone scores again the rows another scorer
    scored (a profile written again since); its own rows keep their logged scores."""
    reference = digit_outputs.reference
    plain = build_profile(
        reference.embeddings,
        reference.probabilities,
        [label or "" for label in reference.labels],
        reference.summaries,
        digit_profile.labels,
    )
    assert not plain.ood.reads_early_features
    part = digit_outputs.held_out.take(np.arange(60))
    window = part.window(plain)
    logged = np.full(60, 1e6)
    window.ood_scores = logged
    window.ood_scorers = ["another scorer"] * 30 + [plain.ood.fingerprint()] * 30
    scores = window_scores(plain, window)
    assert scores is not None
    np.testing.assert_array_equal(scores[:30], plain.ood.score(part.embeddings[:30]))
    np.testing.assert_array_equal(scores[30:], logged[30:])


def test_a_strict_level_can_still_see_the_embedding_move(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    """With 500 permutations the embedding's p-value is at least 1/501, and over the 8 checks
    that run (height, width and format never vary) Holm makes that 0.016: at level 0.01 the
    embedding test could never drift, however far the digits turned. The level sizes the
    permutations, for all 11 checks."""
    rotated = digit_outputs.transform(lambda image: image.rotate(90))
    window = _window(rotated, 100, 0, digit_profile)
    checks = {check.name: check for check in check_window(digit_profile, window, MODEL).checks}
    assert checks["embedding"].p_value_raw == 1 / 501  # the default level: 500, as before
    strict = check_window(digit_profile, window, MODEL, MonitorSettings(level=0.01))
    embedding = next(check for check in strict.checks if check.name == "embedding")
    assert len(strict.checks) == 11
    assert embedding.p_value_raw == 1 / 2200 and embedding.detail.startswith("2199 permutations")
    assert embedding.p_value is not None and embedding.p_value <= 0.01 and embedding.drift
    hopeless = check_window(
        digit_profile, window, MODEL, MonitorSettings(level=1e-5, permutations=200)
    )
    embedding = next(check for check in hopeless.checks if check.name == "embedding")
    assert "cannot reach level 1e-05 over 11 checks" in embedding.detail
