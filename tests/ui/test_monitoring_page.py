"""The Monitoring page's figures: the window's span, the history as a table, and each chart's
reference line (the OOD rate expected in distribution, the drift verdict's level)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import altair as alt
import numpy as np
import pytest

from mlfactory.ui.monitoring_page import (
    MISSING,
    P_VALUE_FLOOR,
    checks_frame,
    history_frame,
    time_axis_format,
    time_chart,
    window_span,
    window_title,
)


def bucket(start: str, end: str, p_values: dict[str, float | None], n: int = 50) -> dict[str, Any]:
    """One bucket as `GET /v1/monitoring/history` answers it."""
    return {
        "from": start,
        "to": end,
        "n": n,
        "requests": n,
        "ood_fraction": 0.02 if n else None,
        "p_values": p_values if n else {},
    }


def layer_values(chart: alt.Chart | alt.LayerChart) -> list[float]:
    """The values of the reference line the chart draws (its second layer's data)."""
    spec = chart.to_dict()
    if "layer" not in spec:
        return []
    rule = spec["layer"][1]
    assert rule["mark"]["type"] == "rule" and rule["mark"]["strokeDash"]
    return [row["value"] for row in spec["datasets"][rule["data"]["name"]]]


def test_p_values_are_columns_floored_for_the_log_scale() -> None:
    buckets = [
        bucket("2026-12-01T10:00:00+00:00", "2026-12-01T10:05:00+00:00", {"embedding": 0.0}),
        bucket("2026-12-01T10:05:00+00:00", "2026-12-01T10:10:00+00:00", {}, n=0),
        bucket("2026-12-01T10:10:00+00:00", "2026-12-01T10:15:00+00:00", {"embedding": 0.4}),
    ]
    frame, columns = history_frame(buckets)
    assert columns == ["p embedding"] and len(frame) == 3  # the idle bucket too
    assert frame["p embedding"].tolist()[::2] == [P_VALUE_FLOOR, 0.4]
    assert np.isnan(frame["p embedding"][1]) and np.isnan(frame["ood_fraction"][1])
    assert frame["requests per s"].tolist() == [50 / 300, 0.0, 50 / 300]  # idle: 0


def test_the_checks_table_reads_an_underflowed_p_value_as_a_bound() -> None:
    def check(name: str, statistic: float | None, p_value: float | None, status: str) -> dict:
        fields = {"statistic": statistic, "p_value": p_value, "status": status, "detail": ""}
        return {"name": name, "kind": "feature", "test": "ks", **fields}

    table = checks_frame(
        [
            check("brightness_mean", 0.97, 0.0, "drift"),  # below the smallest float: 0.0
            check("confidence", 0.12, 0.0123, "drift"),
            check("width", None, None, "no variation"),
        ]
    )
    assert table["p_value"].tolist() == ["< 1e-300", "0.0123", MISSING]
    assert table["statistic"].tolist() == ["0.97", "0.12", MISSING]
    assert table.index.tolist() == ["brightness_mean", "confidence", "width"]
    assert list(table.columns) == ["kind", "statistic", "p_value", "status", "detail"]


def test_the_request_rate_is_of_each_buckets_own_span() -> None:
    """50 requests in 0.3 s cut into 12 buckets of 25 ms: thousands a second, not 1."""
    start = datetime(2026, 12, 1, 10, tzinfo=UTC)
    counts = [5, 0, 0, 10, 5, 5, 0, 5, 5, 5, 5, 5]
    span = timedelta(seconds=0.3) / len(counts)
    buckets = [
        bucket((start + i * span).isoformat(), (start + (i + 1) * span).isoformat(), {}, n=n)
        for i, n in enumerate(counts)
    ]
    frame, _ = history_frame(buckets)
    assert frame["requests per s"].round(6).tolist() == [n / 0.025 for n in counts]
    # no predictions at all: nothing to draw
    empty, columns = history_frame([bucket(buckets[0]["from"], buckets[0]["to"], {}, n=0)])
    assert empty.empty and columns == []


def test_lines_break_at_idle_buckets_instead_of_ramping_across_them() -> None:
    buckets = [
        bucket(f"2026-12-01T10:0{i}:00+00:00", f"2026-12-01T10:0{i + 1}:00+00:00", {}, n=n)
        for i, n in enumerate([50, 0, 0, 50, 50])
    ]
    frame, _ = history_frame(buckets)
    spec = time_chart(frame, ["ood_fraction", "requests per s"]).to_dict()
    rows = next(iter(spec["datasets"].values()))
    pieces = {
        series: [(row["piece"], row["value"]) for row in rows if row["series"] == series]
        for series in ("ood_fraction", "requests per s")
    }
    # one line before the idle minutes, another after them (no point where there is none)
    assert pieces["ood_fraction"] == [(0, 0.02), (2, 0.02), (2, 0.02)]
    assert [value for _, value in pieces["requests per s"]] == [50 / 60, 0, 0, 50 / 60, 50 / 60]
    assert len({piece for piece, _ in pieces["requests per s"]}) == 1  # 0 is a value: drawn
    assert spec["encoding"]["detail"] == {"field": "piece", "type": "nominal"}


@pytest.mark.parametrize(
    ("seconds", "labels"), [(0.3, "%H:%M:%S.%L"), (480, "%H:%M:%S"), (7 * 86400, "%m-%d %H:%M")]
)
def test_the_time_axis_reads_in_utc_24_hours_as_the_caption(seconds: float, labels: str) -> None:
    """UTC whatever the browser's zone, 24-hour, and to the millisecond only for a window of
    seconds (its ticks would all read the same second)."""
    start = datetime(2026, 12, 1, 18, 21, 42, tzinfo=UTC)
    end = start + timedelta(seconds=seconds)
    middle = start + (end - start) / 2
    frame, _ = history_frame(
        [
            bucket(start.isoformat(), middle.isoformat(), {"embedding": 0.5}),
            bucket(middle.isoformat(), end.isoformat(), {"embedding": 0.5}),
        ]
    )
    assert time_axis_format(frame) == labels
    spec = time_chart(frame, ["p embedding"], (0.01, "level 0.01"), log_scale=True).to_dict()
    for layer in (spec["layer"][0], spec["layer"][2]):  # the lines and the guide's name
        x = layer["encoding"]["x"]
        assert x["scale"] == {"type": "utc"} and x["axis"]["format"] == labels
    rows = next(iter(spec["datasets"].values()))
    assert rows[0]["UTC"] == f"{middle:%Y-%m-%d %H:%M:%S.%f}"[:-3]  # the tooltip, in UTC


def test_checks_that_did_not_run_have_no_points() -> None:
    start, end = "2026-12-01T10:00:00+00:00", "2026-12-01T10:01:00+00:00"
    frame, columns = history_frame([bucket(start, end, {"embedding": None, "confidence": None})])
    assert columns == ["p embedding", "p confidence"]
    assert np.isnan(frame[columns].to_numpy()).all()
    empty, no_columns = history_frame([])
    assert empty.empty and no_columns == []


def test_the_p_value_chart_is_logarithmic_with_the_level_line() -> None:
    start, end = "2026-12-01T10:00:00+00:00", "2026-12-01T10:05:00+00:00"
    frame, columns = history_frame([bucket(start, end, {"embedding": 1e-9, "confidence": 0.3})])
    chart = time_chart(frame, columns, (0.01, "level 0.01"), log_scale=True)
    assert layer_values(chart) == [0.01]
    lines = chart.to_dict()["layer"][0]
    assert lines["encoding"]["y"]["scale"] == {"type": "log", "domain": [P_VALUE_FLOOR, 1]}
    # the line is named where it ends
    text = chart.to_dict()["layer"][2]
    assert text["mark"]["type"] == "text" and text["encoding"]["text"]["field"] == "guide"


def test_a_chart_without_a_reference_line_is_one_layer() -> None:
    start, end = "2026-12-01T10:00:00+00:00", "2026-12-01T10:05:00+00:00"
    frame, _ = history_frame([bucket(start, end, {})])
    chart = time_chart(frame, ["ood_fraction"])
    assert layer_values(chart) == []
    assert chart.to_dict()["encoding"]["y"].get("scale", {}) == {}  # linear


def test_the_windows_span_reads_as_the_cli_says_it() -> None:
    """To the second in UTC, whatever zone the times are written in; an empty window says so."""
    window = {"from": "2026-12-04T05:30:04.577268+00:00", "to": "2026-12-04T06:30:06.9+01:00"}
    assert window_span(window) == "from 2026-12-04 05:30:04 to 2026-12-04 05:30:06 UTC"
    assert window_span({"from": "2026-12-04T05:30:04", "to": "2026-12-04T05:31:00"}) == (
        "from 2026-12-04 05:30:04 to 2026-12-04 05:31:00 UTC"
    )
    assert window_span({"n": 0, "from": None, "to": None}) == "no predictions in the window"


def test_the_windows_title_says_when_it_is_empty_or_cut_short() -> None:
    assert window_title(0, 1000, None) == ("No predictions logged yet", None)
    assert window_title(0, 1000, "last hour") == ("No predictions in the last hour", None)
    assert window_title(14, 1000, None) == ("The last 14 predictions", None)
    assert window_title(999, 1000, "last week") == ("999 predictions, last week", None)
    assert window_title(1000, 1000, "last week") == (
        "1,000 predictions, last week",
        "the last week holds at least 1,000 predictions: this window is the latest 1,000 of "
        "them, not the whole period (Last predictions sets the number)",
    )
