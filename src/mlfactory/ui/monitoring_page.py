"""The Monitoring page: drift checks, OOD rate, accuracy, latency and traffic over time.

Everything comes from `GET /v1/monitoring/drift` and `GET /v1/monitoring/history`. The
figures are drawn in a fragment, so "Refresh" fetches them again without reloading the app.
The API's texts (labels, feature names, notes, errors) go through `plain` or `plain_table`
before Streamlit renders them as Markdown.
"""

from __future__ import annotations

import math
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from mlfactory.monitoring.number_text import p_value_text
from mlfactory.times import utc_time
from mlfactory.ui.client import ApiClient, ApiError
from mlfactory.ui.markdown_text import message, plain_table

DEFAULT_LAST = 1000
DEFAULT_BUCKETS = 12
CHECK_COLUMNS = ("name", "kind", "statistic", "p_value", "status", "detail")
# A missing figure: not "-", which a table cell renders as a list bullet.
MISSING = "\u2013"  # an en dash
FLAGGED_COLUMNS = (
    "request_id",
    "input_index",
    "time",
    "ood_score",
    "label",
    "confidence",
    "true_label",
)
# The periods a window can be limited to: the text shown, and the API's `since`.
PERIODS = {"all logged": None, "last hour": "1h", "last day": "1d", "last week": "1w"}
# A figure's reference line: its value and what it is (the HTML report draws the same).
Guide = tuple[float, str]
GUIDE_COLOR = "#c62828"
# The bottom of the p-value chart's log scale: smaller p-values (and 0) are drawn on it.
P_VALUE_FLOOR = 1e-6
CHART_HEIGHT = 220  # pixels, with a one-row legend
LEGEND_COLUMNS = 3
LEGEND_ROW_HEIGHT = 22
# A time axis over less than this many seconds reads to the millisecond; over more than the
# second, with the date.
SUBSECOND_SPAN_S = 10.0
DATED_SPAN_S = 2 * 24 * 3600.0


def render(client: ApiClient) -> None:
    """Draw the page: the window settings, then the refreshable figures."""
    st.header("Monitoring")
    last_col, period_col, buckets_col = st.columns(3)
    last = int(
        last_col.number_input("Last predictions", 10, 100_000, DEFAULT_LAST, step=100, key="last")
    )
    period = str(period_col.selectbox("Period", list(PERIODS), key="period"))
    buckets = int(buckets_col.number_input("Windows over time", 1, 100, DEFAULT_BUCKETS, key="bk"))
    _figures(client, last, period, buckets)


@st.fragment
def _figures(client: ApiClient, last: int, period: str, buckets: int) -> None:
    st.button("Refresh", key="refresh")  # a click reruns only this fragment: fresh figures
    since = PERIODS[period]
    try:
        report = client.drift(last, since)
        history = client.history(last, buckets, since)
    except ApiError as exc:
        if exc.status == 404:
            st.info(f"Monitoring: {message(exc)}")
        else:
            st.error(message(exc))
        return
    _current(report, last, None if since is None else period)
    _over_time(history, report)


def window_span(window: dict[str, Any]) -> str:
    """When the window's first and last predictions came, as `mlfactory monitor` says it."""
    first, last = window.get("from"), window.get("to")
    if not (first and last):
        return "no predictions in the window"
    return f"from {utc_time(first)} to {utc_time(last)} UTC"


def window_title(n: int, last: int, period: str | None) -> tuple[str, str | None]:
    """The window's heading, and a note when `last` cut a period's predictions short (the
    window is then the latest part of the period, not all of it), as `mlfactory monitor`
    says it of its own limit."""
    if not n:
        empty = "No predictions logged yet" if period is None else f"No predictions in the {period}"
        return empty, None
    if period is None:
        return f"The last {n:,} predictions", None
    cut = None
    if n >= last:
        cut = (
            f"the {period} holds at least {last:,} predictions: this window is the latest "
            f"{last:,} of them, not the whole period (Last predictions sets the number)"
        )
    return f"{n:,} predictions, {period}", cut


def _current(report: dict[str, Any], last: int, period: str | None) -> None:
    """The window's verdict, its figures and its tables."""
    window = report.get("window", {})
    n = window.get("n", 0)
    title, cut = window_title(n, last, period)
    st.subheader(title)
    st.caption(window_span(window))
    if cut:
        st.warning(cut)
    if not n:
        return
    _verdict(report)
    ood, accuracy = report.get("ood", {}), report.get("accuracy", {})
    ood_col, estimated_col, live_col = st.columns(3)
    ood_col.metric(
        "Out-of-distribution rate",
        _pct(ood.get("fraction")),
        help=f"inputs scored above the threshold {_num(ood.get('threshold'))}; "
        f"{_pct(ood.get('expected'))} expected in distribution",
    )
    low_high = accuracy.get("estimated_ci") or [None, None]
    estimated_col.metric(
        "Estimated accuracy",
        _pct(accuracy.get("estimated")),
        help=f"95% interval {_pct(low_high[0])} to {_pct(low_high[1])}",
    )
    live_col.metric(
        "Live accuracy",
        _pct(accuracy.get("live")),
        help=f"on {accuracy.get('labelled') or 0} predictions with feedback",
    )
    checks = report.get("checks") or []
    if checks:
        st.table(plain_table(checks_frame(checks)))
    for note in report.get("notes") or []:
        st.caption(message(note))
    _labels_table(report.get("labels") or [], n)
    _flagged_table(ood.get("flagged") or [])


def checks_frame(checks: list[dict[str, Any]]) -> pd.DataFrame:
    """The window's checks as the page's table shows them, one row per check by name.

    The verdict, not the drift flag: a check that did not run ("insufficient data", "no
    variation") is not one that found no drift; the detail says what moved, or why not.
    """
    table = pd.DataFrame(checks)
    table["statistic"] = table["statistic"].map(_num)
    table["p_value"] = table["p_value"].map(lambda p: p_value_text(p) if _given(p) else MISSING)
    columns = [c for c in CHECK_COLUMNS if c in table]
    return table[columns].set_index("name")


def _verdict(report: dict[str, Any]) -> None:
    """The drift verdict of the window, at the server's level."""
    status = report.get("status")
    # the server's MLFACTORY_MONITOR_LEVEL: the same verdict as its gauges and alerts
    level = f"at level {_num(report.get('level'))}, {report.get('correction', 'holm')}-corrected"
    if report.get("drift"):
        st.error(
            f"Drift detected ({level}): at least one check rejects the reference distribution."
        )
    elif status == "insufficient data":
        st.info("Not enough predictions in the window to test for drift yet.")
    else:
        st.success(f"No drift detected ({level}).")


def _labels_table(labels: list[dict[str, Any]], n: int) -> None:
    """Each label's share of the predictions against the reference's (by predicted label),
    and its live accuracy (by true label: of the inputs whose feedback names it, the share
    predicted right)."""
    if not (labels and n):
        return
    st.markdown(
        "**Labels**: as the predicted label, its share of the predictions against the "
        "reference; as the true label (feedback), how many came back and how many of those "
        "the model predicted right (live accuracy)"
    )
    rows = {
        row["label"]: {
            "predicted share, reference": _pct(row.get("reference_share")),
            "predicted share, window": _pct(row.get("window_share")),
            "true label, labelled": row.get("labelled", 0),
            "true label, live accuracy": _pct(row.get("live")),
        }
        for row in labels
    }
    st.table(plain_table(pd.DataFrame.from_dict(rows, orient="index")))


def _flagged_table(flagged: list[dict[str, Any]]) -> None:
    """The most out-of-distribution inputs of the window, if any, with their true labels
    where feedback named them."""
    if not flagged:
        return
    st.markdown(
        "**Most out-of-distribution inputs**: find them by request id and input position; "
        "send their true labels to `POST /v1/feedback`"
    )
    shown = pd.DataFrame(flagged)
    for figure in ("ood_score", "confidence"):
        shown[figure] = shown[figure].map(_num)
    shown["time"] = shown["time"].map(lambda t: MISSING if pd.isna(t) else utc_time(t))
    if "true_label" in shown:  # an older server does not send it
        shown["true_label"] = shown["true_label"].map(lambda t: MISSING if pd.isna(t) else t)
    columns = [c for c in FLAGGED_COLUMNS if c in shown]
    st.table(plain_table(shown[columns].set_index("request_id")))


def _over_time(buckets: list[dict[str, Any]], report: dict[str, Any]) -> None:
    """The history's figures, each against what it is read by: the OOD rate against the rate
    expected in distribution, the p-values (log scale) against the verdict's level."""
    st.subheader("Over time")
    frame, p_columns = history_frame(buckets)
    if frame.empty:
        st.info("No predictions logged in this window yet.")
        return
    ood = report.get("ood", {}).get("expected")
    level = report.get("level")
    # each: title, series, reference line, log scale
    charts: list[tuple[str, list[str], Guide | None, bool]] = [
        ("Out-of-distribution rate", ["ood_fraction"], _guide(ood, f"{_pct(ood)} expected"), False),
        ("Estimated against live accuracy", ["accuracy_estimated", "accuracy_live"], None, False),
        ("Latency (ms)", ["latency_p50_ms", "latency_p95_ms"], None, False),
        ("Request rate", ["requests per s"], None, False),
        (
            "Drift check p-values (corrected)",
            p_columns,
            _guide(level, f"level {_num(level)}"),
            True,
        ),
    ]
    columns = st.columns(2)
    for index, (title, series, guide, log_scale) in enumerate(charts):
        with columns[index % 2]:
            st.markdown(f"**{title}**")
            if frame[series].isna().all().all():
                st.caption("Too few predictions per window for this: choose fewer windows.")
            else:
                chart = time_chart(frame, series, guide, log_scale)
                st.altair_chart(chart, width="stretch")


def history_frame(buckets: list[dict[str, Any]]) -> tuple[pd.DataFrame, list[str]]:
    """Every bucket, one row each (oldest first), with `time` (the bucket's end, UTC),
    `requests per s` (its requests over its own span: 0 when idle, none for a span of no
    time) and a `p CHECK` column per check (its p-value, at least `P_VALUE_FLOOR`: a log scale
    cannot draw 0, the p-value of a far-moved check that underflowed); and the names of those
    p-value columns. A bucket without predictions has no figure but its rate: the charts
    break their lines there instead of drawing a ramp across it."""
    frame = pd.DataFrame(buckets)
    if frame.empty or not frame["n"].fillna(0).any():
        return pd.DataFrame(), []
    # Python writes a moment's microseconds only when it has some: read each as it is
    frame["time"] = pd.to_datetime(frame["to"], utc=True, format="ISO8601")
    start = pd.to_datetime(frame["from"], utc=True, format="ISO8601")
    seconds = (frame["time"] - start).dt.total_seconds()
    rate = frame["requests"].fillna(0) / seconds.where(seconds > 0)
    frame["requests per s"] = rate.astype(float)
    p_values = pd.DataFrame(list(frame["p_values"].map(lambda p: p or {})), index=frame.index)
    p_values = p_values.add_prefix("p ").astype(float).clip(lower=P_VALUE_FLOOR)
    return pd.concat([frame, p_values], axis=1), list(p_values.columns)


def time_axis_format(frame: pd.DataFrame) -> str:
    """The time axis's labels (d3 format, in UTC as the caption): to the millisecond for a
    window of seconds, to the second within two days, else with the date."""
    span = (frame["time"].max() - frame["time"].min()).total_seconds()
    if span < SUBSECOND_SPAN_S:
        return "%H:%M:%S.%L"
    return "%H:%M:%S" if span < DATED_SPAN_S else "%m-%d %H:%M"


def time_chart(
    frame: pd.DataFrame, series: list[str], guide: Guide | None = None, log_scale: bool = False
) -> alt.Chart | alt.LayerChart:
    """Lines with a point per bucket (a few buckets still show), one colour per series, on a
    UTC time axis, broken where a bucket has no value; and a dashed red line at `guide`'s
    value, named at its right end."""
    long = frame.melt(id_vars=["time"], value_vars=series, var_name="series")
    # a new piece of line after each bucket without a value: no line across it
    long["piece"] = long.groupby("series")["value"].transform(lambda v: v.isna().cumsum())
    long = long.dropna(subset=["value"])
    long["UTC"] = long["time"].dt.strftime("%Y-%m-%d %H:%M:%S.%f").str[:-3]
    scale, axis = alt.Scale(), alt.Axis()
    if log_scale:  # a line per power of 100, not the log scale's many minor ones
        scale = alt.Scale(type="log", domain=[P_VALUE_FLOOR, 1])
        axis = alt.Axis(values=[P_VALUE_FLOOR, 1e-4, 1e-2, 1], format="~g")
    x = alt.X(
        "time:T",
        title="UTC",
        scale=alt.Scale(type="utc"),
        axis=alt.Axis(format=time_axis_format(frame), labelOverlap=True),
    )
    # the legend below it takes a row per LEGEND_COLUMNS series, out of the chart's height
    height = CHART_HEIGHT + LEGEND_ROW_HEIGHT * (math.ceil(len(series) / LEGEND_COLUMNS) - 1)
    legend = alt.Legend(orient="bottom", title=None, columns=LEGEND_COLUMNS)
    lines = (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("value:Q", title=None, scale=scale, axis=axis),
            color=alt.Color("series:N", legend=legend),
            detail="piece:N",
            tooltip=["UTC:N", "series:N", "value:Q"],
        )
    )
    if guide is None:
        return lines.properties(height=height)
    value, text = guide
    # named at the right end of the line, above it
    at = alt.Chart(pd.DataFrame({"time": [frame["time"].max()], "value": [value], "guide": [text]}))
    y = alt.Y("value:Q", scale=scale)
    rule = at.mark_rule(color=GUIDE_COLOR, strokeDash=[6, 4]).encode(y=y, tooltip=["guide:N"])
    name = at.mark_text(align="right", baseline="bottom", dy=-2, color=GUIDE_COLOR).encode(
        x=x, y=y, text="guide:N"
    )
    return alt.LayerChart(layer=[lines, rule, name], height=height)


def _guide(value: Any, text: str) -> Guide | None:
    """A reference line at `value`, or none when the report lacks it (an older server)."""
    return (float(value), text) if _given(value) else None


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}%" if _given(value) else MISSING


def _num(value: Any) -> str:
    return f"{value:.4g}" if _given(value) else MISSING


def _given(value: Any) -> bool:
    """A number, not None and not NaN (pandas' None in a column of numbers)."""
    return isinstance(value, int | float) and not math.isnan(value)
