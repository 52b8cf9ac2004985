"""The inputs a report names first, on real digits and photos: the most out-of-distribution
ones, by request id and position, highest score first."""

from __future__ import annotations

import numpy as np

from mlfactory.monitoring.flagged import flagged_lines, flagged_text, most_out_of_distribution
from mlfactory.monitoring.profile import ReferenceProfile
from mlfactory.monitoring.report import check_window
from tests.monitoring.conftest import DigitOutputs

MODEL = {"name": "digits", "version": "1"}


def test_photos_among_digits_are_listed_by_request_highest_score_first(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    digits, photos = digit_outputs.held_out.take(np.arange(60)), digit_outputs.stamps
    scores = np.concatenate(
        [
            digit_profile.ood.score(digits.embeddings, digits.early),
            digit_profile.ood.score(photos.embeddings, photos.early),
        ]
    )
    probabilities = np.concatenate([digits.probabilities, photos.probabilities])
    request_ids = [f"digits-{i // 10}" for i in range(60)] + ["photos"] * len(photos)
    positions = [i % 10 for i in range(60)] + list(range(len(photos)))
    labels = digit_profile.labels
    listed = most_out_of_distribution(
        scores, digit_profile.ood.threshold, probabilities, labels, request_ids, positions
    )
    above = np.flatnonzero(scores > digit_profile.ood.threshold)
    assert len(listed) == min(len(above), 10) > 0
    assert sum(item.request_id == "photos" for item in listed) >= len(photos) // 2
    assert [item.ood_score for item in listed] == sorted(scores[above], reverse=True)[:10]
    for item in listed:
        row = request_ids.index(item.request_id) + item.input_index
        assert item.ood_score == scores[row] > digit_profile.ood.threshold
        assert item.label == labels[int(np.argmax(probabilities[row]))]
        assert item.confidence == float(np.max(probabilities[row]))
    first = listed[0]
    assert flagged_text(first) == (
        f"request {first.request_id} input {first.input_index} (score {first.ood_score:.4g}, "
        f"predicted {first.label} at {first.confidence:.2f})"
    )
    lines = flagged_lines(listed)  # the terminal's: three, then how many more
    assert lines[:3] == [f"  {flagged_text(item)}" for item in listed[:3]]
    assert lines[3:] == (
        [f"  and {len(listed) - 3} more (--json, --html)"] if len(listed) > 3 else []
    )
    # a true label sent back for the top one shows beside it
    top_row = request_ids.index(first.request_id) + first.input_index
    truth: list[str | None] = [None] * len(scores)
    truth[top_row] = "7"
    named = most_out_of_distribution(
        scores,
        digit_profile.ood.threshold,
        probabilities,
        labels,
        request_ids,
        positions,
        true_labels=truth,
    )
    assert [item.true_label for item in named] == ["7"] + [None] * (len(named) - 1)
    assert flagged_text(named[0]).endswith(", true 7)")

    # scores left out (NaN) are not listed; without scores or request ids nothing is
    unscored = scores.copy()
    unscored[above] = np.nan
    assert most_out_of_distribution(unscored, 0.0, probabilities, labels, request_ids, positions)
    assert not most_out_of_distribution(
        unscored, digit_profile.ood.threshold, probabilities, labels, request_ids, positions
    )
    assert not most_out_of_distribution(None, 0.0, probabilities, labels, request_ids, positions)
    assert not most_out_of_distribution(scores, 0.0, probabilities, labels, [], [])
    assert flagged_lines([]) == []


def test_held_out_digits_alone_flag_at_most_a_few(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    held_out = digit_outputs.held_out
    window = held_out.window(
        digit_profile,
        request_ids=[f"r{i}" for i in range(len(held_out))],
        input_indices=[0] * len(held_out),
    )
    report = check_window(digit_profile, window, MODEL)
    assert report.ood_fraction is not None
    assert len(report.flagged) == min(round(report.ood_fraction * len(held_out)), 10)
    assert report.ood_fraction <= 0.05  # calibrated to 1 % on other unseen digits
