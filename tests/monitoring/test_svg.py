"""The report's inline charts: axis labels that tell their ticks apart."""

from __future__ import annotations

import re

import numpy as np

from mlfactory.monitoring import svg


def y_labels(chart: str) -> list[str]:
    """The texts right-aligned at the y axis, bottom to top."""
    return re.findall(r'<text x="\d+" y="[\d.]+" text-anchor="end">([^<]*)</text>', chart)[:3]


def test_percentages_use_the_fewest_decimals_that_tell_values_apart() -> None:
    assert svg.percentages([0.0, 0.5, 1.0]) == ["0%", "50%", "100%"]
    assert svg.percentages([0.0, 0.006, 0.012]) == ["0.0%", "0.6%", "1.2%"]
    assert svg.percentages([0.0, 0.00001, 0.00002]) == ["0.000%", "0.001%", "0.002%"]
    assert svg.percentages([0.0, 0.0, 0.0]) == ["0%", "0%", "0%"]


def test_an_ood_rate_of_zero_under_a_one_percent_guide_has_three_distinct_labels() -> None:
    # The report's OOD chart of a quiet window: every span at 0 %, the expected 1 % drawn as a
    # guide, so the axis runs just above 1 % (whole percentages would read 0%, 1%, 1%).
    chart = svg.lines(
        [0.0, 1.0, 2.0],
        [svg.Series("OOD rate", [0.0, 0.0, 0.0], svg.WINDOW_COLOR)],
        ("from", "to"),
        guide=(0.01, "1% expected"),
    )
    labels = y_labels(chart)
    assert len(labels) == 3 and len(set(labels)) == 3, labels
    assert labels[0] == "0.0%" and labels[2] == "1.1%"


def test_an_ood_rate_of_every_input_tops_its_axis_at_100_percent() -> None:
    # every input of the later spans out of distribution: a rate axis reads 100 % at its top,
    # not 110 %
    chart = svg.lines(
        [0.0, 1.0, 2.0],
        [svg.Series("OOD rate", [0.0, 1.0, 1.0], svg.WINDOW_COLOR)],
        ("from", "to"),
        guide=(0.02, "2% expected"),
    )
    assert y_labels(chart) == ["0%", "50%", "100%"]


def test_a_histogram_keeps_whole_percentages_when_they_differ() -> None:
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    chart = svg.histograms(edges, np.array([0.2, 0.5, 0.3]), np.array([0.3, 0.4, 0.3]))
    assert y_labels(chart) == ["0%", "26%", "52%"]


def test_a_share_of_every_value_in_one_bin_reads_100_percent_at_the_top() -> None:
    edges = np.array([0.0, 1.0, 2.0])
    chart = svg.histograms(edges, np.array([1.0, 0.0]), np.array([0.97, 0.03]))
    assert y_labels(chart) == ["0%", "50%", "100%"]
    chart = svg.bars(["a", "b"], np.array([1.0, 0.0]), np.array([0.5, 0.5]))
    assert y_labels(chart) == ["0%", "50%", "100%"]
    # below, the axis keeps its room above the largest share
    chart = svg.histograms(edges, np.array([0.5, 0.5]), np.array([0.4, 0.6]))
    assert y_labels(chart) == ["0%", "32%", "63%"]


def test_a_chart_of_counts_writes_its_own_axis_labels() -> None:
    # the report's checks that drift over time: 0 to 8 checks, not 0% to 800%
    chart = svg.lines(
        [0.0, 1.0, 2.0],
        [svg.Series("checks that drift", [0.0, 0.0, 5.0], svg.WINDOW_COLOR)],
        ("from", "to"),
        y_range=(0.0, 8.0),
        y_labels=lambda values: [f"{value:.3g}" for value in values],
    )
    assert y_labels(chart) == ["0", "4", "8"]
