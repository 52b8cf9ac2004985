"""The monitoring report as one self-contained HTML page (inline SVG and CSS, nothing fetched).

It only renders what the checks computed: a `DriftReport`, plus, when the window itself is at
hand, the reference-against-window distribution of every checked signal (`distributions`) and
the window's time buckets (`mlfactory.monitoring.history.history`, what
`GET /v1/monitoring/history` answers, checked at the report's level) for the OOD rate, the
accuracies and the checks that drift over time.

`render_section` gives the HTML fragment (one `<section>`) that other pages embed, the model
card included; `render_html` wraps it in a whole page; `report_html` does all of it from a
profile and a window:

    report = check_window(profile, window, model)
    Path("monitor.html").write_text(report_html(profile, window, report))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from html import escape
from typing import Any

import numpy as np

from mlfactory.monitoring import svg
from mlfactory.monitoring.accuracy import Estimate
from mlfactory.monitoring.distributions import Distribution, distributions
from mlfactory.monitoring.drift import DEFAULT_MIN_SAMPLES, NO_VARIATION, CheckResult
from mlfactory.monitoring.flagged import FlaggedInput
from mlfactory.monitoring.history import history
from mlfactory.monitoring.labels import LabelRow
from mlfactory.monitoring.number_text import number_text, p_value_text
from mlfactory.monitoring.profile import ReferenceProfile
from mlfactory.monitoring.report import DriftReport, MonitorSettings, Window

HISTORY_BUCKETS = 20
STATUS_COLORS = {"drift": "#c0392b", "no drift": "#2e7d32"}
# What a cell shows for a figure a check did not compute.
DASH = "\u2014"
STYLE = """
.mlf-monitoring { font-family: system-ui, sans-serif; color: #222; max-width: 1180px; }
.mlf-monitoring h2 { margin: 0.2em 0; } .mlf-monitoring h3 { margin: 1.2em 0 0.4em; }
.mlf-monitoring table { border-collapse: collapse; font-size: 13px; }
.mlf-monitoring th, .mlf-monitoring td { border-bottom: 1px solid #ddd; padding: 3px 8px;
  text-align: left; vertical-align: top; }
.mlf-monitoring td.num { text-align: right; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
.mlf-monitoring .badge { color: #fff; padding: 2px 8px; border-radius: 3px; }
.mlf-monitoring .grid { display: flex; flex-wrap: wrap; gap: 12px; }
.mlf-monitoring figure { margin: 0; border: 1px solid #eee; padding: 4px; }
.mlf-monitoring figcaption { font-size: 12px; } .mlf-monitoring .muted { color: #777; }
"""


def report_html(
    profile: ReferenceProfile, window: Window, report: DriftReport, buckets: int | None = None
) -> str:
    """The whole page for a report of `window`, with its distributions and its history.

    Args:
        profile: the bundle's reference profile.
        window: the checked window.
        report: `check_window`'s report of it.
        buckets: equal time spans of the figures over time (each checked on its own); by
            default as many as hold enough predictions for a drift check on average, at most
            `HISTORY_BUCKETS`.
    """
    return render_html(
        report, distributions(profile, window), report_spans(profile, window, report, buckets)
    )


def report_spans(
    profile: ReferenceProfile, window: Window, report: DriftReport, buckets: int | None = None
) -> list[dict[str, Any]]:
    """`window` cut into `buckets` time spans (default: see `report_html`), each checked as
    `report` was (its level and correction): the figures over time."""
    if buckets is None:
        buckets = max(1, min(HISTORY_BUCKETS, report.n // DEFAULT_MIN_SAMPLES))
    settings = MonitorSettings(level=report.level, correction=report.correction)
    return history(profile, window, report.model, buckets, settings)


def render_html(
    report: DriftReport,
    shown: Sequence[Distribution] = (),
    buckets: Sequence[Mapping[str, Any]] = (),
) -> str:
    """A complete, self-contained HTML page of the report (see `render_section`)."""
    title = f"Monitoring: {report.model.get('name', '?')} {report.model.get('version', '')}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title></head><body>\n"
        f"{render_section(report, shown, buckets)}\n</body></html>\n"
    )


def render_section(
    report: DriftReport,
    shown: Sequence[Distribution] = (),
    buckets: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The report as one `<section class="mlf-monitoring">` with its own style, to embed.

    Args:
        report: the checked window.
        shown: reference-against-window distributions (`distributions`); none drawn if empty.
        buckets: the window's time buckets as `history` gives them (and
            `GET /v1/monitoring/history` answers); no figures over time if there are none.
    """
    parts = [f"<section class='mlf-monitoring'><style>{STYLE}</style>", _header(report)]
    parts.append(_checks_table(report.checks))
    if report.labels:
        parts.append(_labels_table(report.labels))
    if report.flagged:
        parts.append(_flagged_table(report.flagged))
    if buckets:
        parts.append(
            "<h3>Over time</h3>" + _time_figures(buckets, report.ood_expected, report.level)
        )
    if shown:
        by_name = {check.name: check for check in report.checks}
        # A signal every input shares (28 x 28 PNG digits) says nothing drawn.
        figures = [
            _distribution_figure(d, by_name.get(d.name))
            for d in shown
            if getattr(by_name.get(d.name), "status", "") != NO_VARIATION
        ]
        parts.append("<h3>Reference against window</h3><div class='grid'>")
        parts += [*figures, "</div>"]
    parts.append("</section>")
    return "\n".join(parts)


def _header(report: DriftReport) -> str:
    name = f"{report.model.get('name', '?')} version {report.model.get('version', '?')}"
    color = STATUS_COLORS.get(report.status, "#777")
    span = (
        f"{_time(report.window_from)} to {_time(report.window_to)}"
        if report.window_from
        else "no times logged"
    )
    ood = (
        f"{report.ood_fraction:.1%} of inputs out of distribution (score above "
        f"{report.ood_threshold:.3g})"
        if report.ood_fraction is not None
        else "no inputs"
    )
    notes = "".join(f"<p class='muted'>{escape(note)}</p>" for note in report.notes)
    return (
        f"<h2>{escape(name)} <span class='badge' style='background:{color}'>"
        f"{escape(report.status)}</span></h2>"
        f"<p>{report.n} predictions, {escape(span)}. Checks corrected together "
        f"({escape(report.correction)}) at level {report.level:g}.</p>"
        f"<p>{escape(ood)}. {escape(_accuracy_text(report))}</p>{notes}"
    )


def _accuracy_text(report: DriftReport) -> str:
    estimated, live = report.estimated, report.live
    text = "Estimated accuracy: " + _estimate(estimated)
    text += report.confidence_text()
    if live.n:
        text += f"; live accuracy {_estimate(live)} on {live.n:,} labelled predictions"
    else:
        text += "; no feedback labels in the window"
    return text + "."


def _estimate(estimate: Estimate) -> str:
    if estimate.value is None:
        return "none"
    return f"{estimate.value:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


def _checks_table(checks: Sequence[CheckResult]) -> str:
    rows = []
    for check in checks:
        color = STATUS_COLORS.get(check.status, "#777")
        rows.append(
            "<tr>"
            f"<td>{escape(check.name)}</td><td>{escape(check.kind)}</td>"
            f"<td>{escape(check.test)}</td>"
            f"<td class='num'>{escape(number_text(check.statistic, DASH))}</td>"
            f"<td class='num'>{escape(p_value_text(check.p_value, DASH))}</td>"
            f"<td class='num'>{escape(p_value_text(check.p_value_raw, DASH))}</td>"
            f"<td style='color:{color}'>{escape(check.status)}</td>"
            f"<td class='num'>{check.n_window}</td><td>{escape(check.detail)}</td></tr>"
        )
    head = (
        "<tr><th>check</th><th>kind</th><th>test</th><th>statistic</th><th>p-value</th>"
        "<th>raw p</th><th>verdict</th><th>n</th><th>detail</th></tr>"
    )
    return f"<h3>Checks</h3><table>{head}{''.join(rows)}</table>"


def _labels_table(rows: Sequence[LabelRow]) -> str:
    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    body = "".join(
        f"<tr><td>{escape(row.label)}</td><td class='num'>{share(row.reference_share)}</td>"
        f"<td class='num'>{share(row.window_share)}</td><td class='num'>{row.labelled}</td>"
        f"<td class='num'>{'&mdash;' if row.live is None else f'{row.live:.3f}'}</td></tr>"
        for row in rows
    )
    head = (
        "<tr><th>label</th><th>predicted, reference</th><th>predicted, window</th>"
        "<th>labelled</th><th>live accuracy</th></tr>"
    )
    return f"<h3>Labels</h3><table>{head}{body}</table>"


def _flagged_table(inputs: Sequence[FlaggedInput]) -> str:
    body = "".join(
        f"<tr><td>{escape(item.request_id)}</td><td class='num'>{item.input_index}</td>"
        f"<td>{_time(item.time)}</td>"
        f"<td class='num'>{item.ood_score:.4g}</td><td>{escape(item.label)}</td>"
        f"<td class='num'>{item.confidence:.3f}</td>"
        f"<td>{escape(item.true_label) if item.true_label is not None else '-'}</td></tr>"
        for item in inputs
    )
    head = (
        "<tr><th>request id</th><th>input</th><th>time</th><th>OOD score</th>"
        "<th>predicted</th><th>confidence</th><th>true label</th></tr>"
    )
    return (
        "<h3>Most out-of-distribution inputs</h3><p class='muted'>The request id and input "
        "position find each in your records, and send its true label to POST /v1/feedback."
        f"</p><table>{head}{body}</table>"
    )


def _time_figures(buckets: Sequence[Mapping[str, Any]], expected_ood: float, level: float) -> str:
    # Each point sits at the middle of its span; an empty span leaves a gap in the lines.
    x = [(_parse(b["from"]).timestamp() + _parse(b["to"]).timestamp()) / 2 for b in buckets]
    labels = (_time(_parse(buckets[0]["from"])), _time(_parse(buckets[-1]["to"])))

    def values(key: str, index: int | None = None) -> list[float]:
        picked = [
            b.get(key) if index is None else (b.get(key) or [None, None])[index] for b in buckets
        ]
        return [np.nan if value is None else float(value) for value in picked]

    ood = svg.lines(
        x,
        [svg.Series("OOD rate", values("ood_fraction"), svg.WINDOW_COLOR)],
        labels,
        guide=(expected_ood, f"{expected_ood:.0%} expected"),
    )
    series = [
        svg.Series(
            "estimated",
            values("accuracy_estimated"),
            svg.REFERENCE_COLOR,
            values("accuracy_estimated_ci", 0),
            values("accuracy_estimated_ci", 1),
        )
    ]
    if any(b.get("labelled") for b in buckets):
        series.append(svg.Series("live", values("accuracy_live"), "#2e7d32", dashed=True))
    accuracy = svg.lines(x, series, labels, y_range=(0.0, 1.0))
    span = _parse(buckets[0]["to"]) - _parse(buckets[0]["from"])
    size = f"{len(buckets)} spans of {_duration(span)}"
    drifting, ran = checks_drifting(buckets, level)
    if ran:
        checks = svg.lines(
            x,
            [svg.Series("checks that drift", drifting, STATUS_COLORS["drift"])],
            labels,
            y_range=(0.0, float(ran)),
            y_labels=lambda values: [f"{value:.3g}" for value in values],
        )
        drift_figure = (
            f"<figure>{checks}<figcaption>Checks that drift in each span, of the {ran} that "
            f"ran, at level {level:g}: the first span above 0 dates the drift ({size})"
            "</figcaption></figure>"
        )
    else:
        drift_figure = (
            f"<p class='muted'>No drift check over time: each of the {size} holds too few "
            "predictions for one.</p>"
        )
    return (
        "<div class='grid'>"
        f"<figure>{ood}<figcaption>Out-of-distribution rate ({size})</figcaption></figure>"
        f"<figure>{accuracy}<figcaption>Estimated accuracy with its 95 % interval, and live "
        f"accuracy where labels arrived ({size})</figcaption></figure>"
        f"{drift_figure}</div>"
    )


def checks_drifting(buckets: Sequence[Mapping[str, Any]], level: float) -> tuple[list[float], int]:
    """Per bucket, how many checks drift (adjusted p-value at most `level`; NaN for a bucket
    without a verdict: empty, or too small for every check), and the most checks that ran in
    one bucket."""
    drifting, ran = [], 0
    for bucket in buckets:
        p_values = [p for p in (bucket.get("p_values") or {}).values() if p is not None]
        ran = max(ran, len(p_values))
        no_verdict = bucket.get("drift") is None
        drifting.append(np.nan if no_verdict else float(sum(p <= level for p in p_values)))
    return drifting, ran


def _distribution_figure(shown: Distribution, check: CheckResult | None) -> str:
    if shown.edges is None:
        chart = svg.bars(list(shown.categories), shown.reference, shown.window)
    else:
        chart = svg.histograms(shown.edges, shown.reference, shown.window)
    caption = escape(shown.name)
    if check is not None:
        caption += f" &mdash; {escape(check.status)}"
        if check.p_value is not None:
            p_text = p_value_text(check.p_value)
            caption += f", p {escape(p_text if p_text.startswith('<') else f'= {p_text}')}"
    return f"<figure>{chart}<figcaption>{caption}</figcaption></figure>"


def _parse(moment: str | datetime) -> datetime:
    return moment if isinstance(moment, datetime) else datetime.fromisoformat(moment)


def _duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def _time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "?"
