"""The report's rows per label, on real digits: which labels a label-prior shift moved, and the
live accuracy of each true label once feedback came back."""

from __future__ import annotations

import numpy as np
from PIL import ImageOps

from mlfactory.monitoring.labels import label_rows, moved_text, weakest_text
from mlfactory.monitoring.profile import ReferenceProfile, label_indices
from mlfactory.monitoring.report import check_window
from tests.monitoring.conftest import DigitOutputs

MODEL = {"name": "digits", "version": "1"}
LOW = ["0", "1", "2", "3", "4"]


def test_a_label_prior_shift_shows_which_labels_moved(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    held_out = digit_outputs.held_out
    low = held_out.take(np.flatnonzero(np.isin(held_out.labels, LOW)))
    report = check_window(digit_profile, low.window(digit_profile), MODEL)
    rows = {row.label: row for row in report.labels}
    assert list(rows) == digit_profile.labels
    reference = np.bincount(digit_profile.drift.predicted, minlength=10) / len(
        digit_profile.drift.predicted
    )
    predicted = low.probabilities.argmax(axis=1)
    for index, label in enumerate(digit_profile.labels):
        assert rows[label].reference_share == reference[index]
        assert rows[label].window_share == np.mean(predicted == index)
        assert rows[label].labelled == 0 and rows[label].live is None
    low_share = sum(rows[label].window_share or 0.0 for label in LOW)
    assert low_share > sum(rows[label].reference_share for label in LOW) + 0.2
    # named first: the labels whose predicted share moved most, with both shares
    moves = sorted(rows.values(), key=lambda r: -abs((r.window_share or 0) - r.reference_share))
    text = moved_text(report.labels) or ""
    assert text.startswith(
        f"{moves[0].label} {moves[0].window_share:.0%} (reference {moves[0].reference_share:.0%})"
    )
    assert [part.split()[0] for part in text.split(", ")] == [row.label for row in moves[:3]]
    assert weakest_text(report.labels) is None  # no feedback yet


def test_live_accuracy_by_true_label_names_the_weakest_labels(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    """Inverted digits with their true labels sent back: each label's share predicted right."""
    inverted = digit_outputs.transform(ImageOps.invert)
    true = label_indices(np.array(inverted.labels, dtype=np.str_), digit_profile.labels)
    true[::2] = -1  # feedback for every other prediction only
    predicted = inverted.probabilities.argmax(axis=1)
    rows = label_rows(digit_profile.labels, digit_profile.drift.predicted, predicted, true)
    for index, row in enumerate(rows):
        mine = true == index
        assert row.labelled == int(mine.sum()) > 0
        assert row.live == np.mean(predicted[mine] == index)
    assert sum(row.labelled for row in rows) == len(inverted) // 2
    worst = sorted(rows, key=lambda row: (row.live, -row.labelled))[:3]
    text = weakest_text(rows)
    assert text == ", ".join(f"{r.label} {r.live:.3f} on {r.labelled:,}" for r in worst)
    assert worst[0].live is not None and worst[0].live < 0.5  # inverted: some labels fail


def test_an_empty_window_has_rows_without_window_figures(
    digit_profile: ReferenceProfile,
) -> None:
    rows = label_rows(digit_profile.labels, digit_profile.drift.predicted, np.zeros(0), np.zeros(0))
    assert [row.window_share for row in rows] == [None] * 10
    assert moved_text(rows) is None and weakest_text(rows) is None
