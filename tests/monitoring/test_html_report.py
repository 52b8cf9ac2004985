"""The HTML report of real digits traffic: self-contained, every check shown, figures that match."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import numpy as np
from PIL import ImageOps

from mlfactory.monitoring.html_report import (
    distributions,
    history,
    render_section,
    report_html,
)
from mlfactory.monitoring.profile import ReferenceProfile
from mlfactory.monitoring.report import Window, check_window
from tests.monitoring.conftest import DigitOutputs, Outputs

MODEL = {"name": "digits", "version": "1"}


class _Tags(HTMLParser):
    """Every start tag with its attributes; fails on nothing, so the counts are checked."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def _mixed_window(digit_outputs: DigitOutputs) -> tuple[Window, Outputs, Outputs]:
    """200 held-out digits, then 100 inverted ones, a minute apart, every 4th labelled."""
    clean = digit_outputs.held_out.take(np.arange(200))
    inverted = digit_outputs.transform(ImageOps.invert).take(np.arange(100))
    start = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    labels = clean.labels + inverted.labels
    window = Window(
        np.concatenate([clean.embeddings, inverted.embeddings]),
        np.concatenate([clean.probabilities, inverted.probabilities]),
        clean.summaries + inverted.summaries,
        timestamps=[start + timedelta(minutes=i) for i in range(300)],
        true_labels=[label if i % 4 == 0 else None for i, label in enumerate(labels)],
    )
    return window, clean, inverted


def test_the_report_is_self_contained_and_shows_every_check(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    window, _, _ = _mixed_window(digit_outputs)
    report = check_window(digit_profile, window, MODEL)
    html = report_html(digit_profile, window, report)
    tags = _tags(html)
    # Nothing is fetched: no scripts, stylesheets, images or frames from anywhere.
    assert not [t for t, a in tags if t in ("script", "link", "img", "iframe", "object")]
    assert not [a for _, a in tags if "src" in a or "href" in a]
    assert not re.search(r"url\(|@import", html)
    rows = [t for t, _ in tags if t == "tr"]
    assert len(rows) == len(report.checks) + 1  # the header, then one row a check
    for check in report.checks:
        assert f"<td>{check.name}</td>" in html
    assert "brightness_mean" in html and "drift" in html
    assert report.status == "drift"
    # One figure per signal that varies, and the two figures over time.
    shown = [
        d.name
        for d in distributions(digit_profile, window)
        if next(c for c in report.checks if c.name == d.name).status != "no variation"
    ]
    assert {"brightness_mean", "predicted_label", "confidence", "ood_score"} <= set(shown)
    assert len([t for t, _ in tags if t == "svg"]) == len(shown) + 2
    assert "2026-11-30 08:00:00" in html and "2026-11-30 12:59:00" in html


def test_the_history_follows_the_window_in_time(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    window, clean, inverted = _mixed_window(digit_outputs)
    buckets = history(digit_profile, window, buckets=6)
    assert [b.n for b in buckets] == [50] * 6
    assert buckets[0].start == window.timestamps[0] and buckets[-1].end == window.timestamps[-1]
    threshold = digit_profile.ood.threshold
    scores = digit_profile.ood.score(window.embeddings)
    assert [b.ood_fraction for b in buckets] == [
        float(np.mean(scores[i * 50 : (i + 1) * 50] > threshold)) for i in range(6)
    ]
    # The inverted half is flagged far more often than the calibrated 1 % of the clean half.
    assert max(b.ood_fraction for b in buckets[:4]) < 0.1
    assert min(b.ood_fraction for b in buckets[4:]) > 0.5
    assert all(b.live.n == 13 or b.live.n == 12 for b in buckets)
    clean_estimate = np.mean([b.estimated.value for b in buckets[:4]])
    inverted_estimate = np.mean([b.estimated.value for b in buckets[4:]])
    assert inverted_estimate < clean_estimate
    assert len(inverted) == 100 and len(clean) == 200


def test_distributions_are_shares_of_the_same_bins(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    window, _, _ = _mixed_window(digit_outputs)
    by_name = {d.name: d for d in distributions(digit_profile, window)}
    brightness = by_name["brightness_mean"]
    assert brightness.edges is not None
    assert np.isclose(brightness.reference.sum(), 1.0) and np.isclose(brightness.window.sum(), 1.0)
    # A third of the window is inverted: bright images the reference never had.
    upper = brightness.edges[1:] > 0.5
    assert brightness.reference[upper].sum() < 0.01
    assert np.isclose(brightness.window[upper].sum(), 1 / 3, atol=0.02)
    labels = by_name["predicted_label"]
    assert labels.edges is None and set(labels.categories) <= set(digit_profile.labels)
    assert np.isclose(labels.window.sum(), 1.0)


def test_a_small_window_and_hostile_names_render_safely(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    part = digit_outputs.held_out.take(np.arange(10))
    window = Window(part.embeddings, part.probabilities, part.summaries)
    model = {"name": "<script>alert(1)</script>", "version": "1"}
    report = check_window(digit_profile, window, model)
    assert report.status == "insufficient data"
    section = render_section(
        report, distributions(digit_profile, window), history(digit_profile, window)
    )
    assert "<script>" not in section and "&lt;script&gt;" in section
    assert section.count("insufficient data") >= len(report.checks)
    assert history(digit_profile, window) == []  # too few for figures over time
    assert "no times logged" in section
