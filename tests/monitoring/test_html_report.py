"""The HTML report of real digits traffic: self-contained, every check shown, figures that match."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import numpy as np
from PIL import ImageOps

from mlfactory.monitoring.distributions import distributions
from mlfactory.monitoring.history import history
from mlfactory.monitoring.html_report import (
    checks_drifting,
    render_section,
    report_html,
    report_spans,
)
from mlfactory.monitoring.profile import ReferenceProfile
from mlfactory.monitoring.report import MonitorSettings, Window, check_window
from tests.monitoring.conftest import DigitOutputs, far_digits

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


def _mixed_window(digit_outputs: DigitOutputs, profile: ReferenceProfile) -> Window:
    """200 held-out digits (in random order: the held-out split is in label order), then 100
    inverted ones, a minute apart, every 4th labelled."""
    order = np.random.default_rng(0).permutation(len(digit_outputs.held_out))
    clean = digit_outputs.held_out.take(order[:200])
    inverted = digit_outputs.transform(ImageOps.invert).take(np.arange(100))
    start = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    labels = clean.labels + inverted.labels
    window = Window(
        np.concatenate([clean.embeddings, inverted.embeddings]),
        np.concatenate([clean.probabilities, inverted.probabilities]),
        clean.summaries + inverted.summaries,
        timestamps=[start + timedelta(minutes=i) for i in range(300)],
        true_labels=[label if i % 4 == 0 else None for i, label in enumerate(labels)],
        ood_scores=np.concatenate(
            [profile.ood.score(o.embeddings, o.early) for o in (clean, inverted)]
        ),
    )
    return window


def test_the_report_is_self_contained_and_shows_every_check(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    window = _mixed_window(digit_outputs, digit_profile)
    report = check_window(digit_profile, window, MODEL)
    html = report_html(digit_profile, window, report)
    tags = _tags(html)
    # Nothing is fetched: no scripts, stylesheets, images or frames from anywhere.
    assert not [t for t, a in tags if t in ("script", "link", "img", "iframe", "object")]
    assert not [a for _, a in tags if "src" in a or "href" in a]
    assert not re.search(r"url\(|@import", html)
    rows = [t for t, _ in tags if t == "tr"]
    # the checks, then the labels: a header and a row each
    assert len(rows) == len(report.checks) + 1 + len(digit_profile.labels) + 1
    for check in report.checks:
        assert f"<td>{check.name}</td>" in html
    assert "brightness_mean" in html and "drift" in html
    # each label's live accuracy with three decimals (1.000 beside 0.889, not 1), or a dash
    assert any(row.live is not None for row in report.labels)
    for row in report.labels:
        live = "&mdash;" if row.live is None else f"{row.live:.3f}"
        assert f"<td class='num'>{row.labelled}</td><td class='num'>{live}</td></tr>" in html
    assert report.status == "drift"
    # One figure per signal that varies, and three figures over time, in 10 spans: about the
    # 30 predictions a drift check needs each (of 300).
    shown = [
        d.name
        for d in distributions(digit_profile, window)
        if next(c for c in report.checks if c.name == d.name).status != "no variation"
    ]
    assert {"brightness_mean", "predicted_label", "confidence", "ood_score"} <= set(shown)
    assert len([t for t, _ in tags if t == "svg"]) == len(shown) + 3
    assert "(10 spans of 29.9 min)" in html
    assert "2026-11-30 08:00:00" in html and "2026-11-30 12:59:00" in html


def test_the_figures_over_time_draw_the_history_spans(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    window = _mixed_window(digit_outputs, digit_profile)
    report = check_window(digit_profile, window, MODEL)
    spans = history(digit_profile, window, MODEL, 6)
    # 50 minutes a span: the inverted digits are the last two.
    assert [span["n"] for span in spans] == [50] * 6
    assert max(span["ood_fraction"] for span in spans[:4]) < 0.1
    assert min(span["ood_fraction"] for span in spans[4:]) > 0.5
    section = render_section(report, (), spans)
    charts = section.split("<svg")[1:]
    assert len(charts) == 3
    ood, accuracy, checks = charts
    assert ood.count("<circle") == 6  # one point a span
    assert "live" in accuracy and accuracy.count("<polyline") == 2  # estimated, live
    assert "6 spans of 49.8 min" in section  # 299 minutes from the first to the last
    # the checks that drift: none while the digits are held-out ones, several once inverted
    drifting, ran = checks_drifting(spans, report.level)
    assert drifting[:4] == [0.0] * 4 and min(drifting[4:]) >= 3
    assert ran == len([c for c in report.checks if c.p_value is not None])
    assert checks.count("<circle") == 6 and f"of the {ran} that ran" in section


def test_the_spans_are_checked_at_the_reports_level(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    window = _mixed_window(digit_outputs, digit_profile)
    # at 0.9 the span of held-out digits whose smallest p-value is 0.88 drifts (not at 0.05)
    for level in (0.9, 1e-3):
        report = check_window(digit_profile, window, MODEL, MonitorSettings(level=level))
        spans = report_spans(digit_profile, window, report, 6)
        for span in spans:
            p_values = [p for p in span["p_values"].values() if p is not None]
            assert span["drift"] == any(p <= level for p in p_values)
        drifting, _ = checks_drifting(spans, level)
        assert f"at level {level:g}" in render_section(report, (), spans)
        assert drifting == [
            sum(p <= level for p in s["p_values"].values() if p is not None) for s in spans
        ]


def test_a_gap_in_the_traffic_leaves_a_gap_in_the_lines(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    part = digit_outputs.held_out.take(np.arange(120))
    start = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    # 60 predictions, four quiet hours, 60 more.
    times = [start + timedelta(minutes=i + (240 if i >= 60 else 0)) for i in range(120)]
    window = part.window(digit_profile, timestamps=times)
    spans = history(digit_profile, window, MODEL, 12)  # half-hour spans
    empty = [span for span in spans if span["n"] == 0]
    assert [span["n"] > 0 for span in spans] == [True] * 2 + [False] * 8 + [True] * 2
    assert all(span["ood_fraction"] is None for span in empty)
    section = render_section(check_window(digit_profile, window, MODEL), (), spans)
    ood = section.split("<svg")[1]
    assert ood.count("<circle") == len(spans) - len(empty)
    assert ood.count("<polyline") == 2  # the line breaks at the gap


def test_distributions_are_shares_of_the_same_bins(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    window = _mixed_window(digit_outputs, digit_profile)
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
    window = part.window(digit_profile)
    model = {"name": "<script>alert(1)</script>", "version": "1"}
    report = check_window(digit_profile, window, model)
    assert report.status == "insufficient data"
    spans = history(digit_profile, window, model, 20)
    assert spans == []  # no times logged: no figures over time
    section = render_section(report, distributions(digit_profile, window), spans)
    assert "<script>" not in section and "&lt;script&gt;" in section
    assert section.count("insufficient data") >= len(report.checks)
    assert "no times logged" in section


def test_spans_too_small_for_a_check_say_so_instead_of_an_empty_figure(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    window = _mixed_window(digit_outputs, digit_profile)
    report = check_window(digit_profile, window, MODEL)
    spans = report_spans(digit_profile, window, report, 30)  # 10 predictions a span
    assert checks_drifting(spans, report.level)[1] == 0
    section = render_section(report, (), spans)
    assert section.count("<svg") == 2 and "checks that drift" not in section
    assert "No drift check over time: each of the 30 spans of" in section


def test_a_p_value_below_the_smallest_float_reads_as_a_bound_not_zero(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    window = far_digits(digit_outputs).window(digit_profile)
    report = check_window(digit_profile, window, MODEL)
    underflowed = [c for c in report.checks if c.p_value == 0.0]
    assert underflowed, [(c.name, c.p_value) for c in report.checks]
    html = report_html(digit_profile, window, report)
    for check in underflowed:
        row = html[html.index(f"<td>{check.name}</td>") :].split("</tr>")[0]
        assert row.count("<td class='num'>&lt; 1e-300</td>") == 2  # corrected and raw
        assert f"{check.name} &mdash; drift, p &lt; 1e-300</figcaption>" in html
    assert "p = 0<" not in html
