"""The Monitoring page's figures: the window's span, the history as a table, and each chart's
reference line (the OOD rate expected in distribution, the drift verdict's level)."""

from __future__ import annotations

from typing import Any

import altair as alt
import numpy as np

from mlfactory.ui.monitoring_page import P_VALUE_FLOOR, history_frame, time_chart, window_span


def bucket(start: str, end: str, p_values: dict[str, float | None], n: int = 50) -> dict[str, Any]:
    """One bucket as `GET /v1/monitoring/history` answers it."""
    return {
        "from": start,
        "to": end,
        "n": n,
        "requests": n,
        "ood_fraction": 0.02 if n else None,
        "p_values": p_values,
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
    assert columns == ["p embedding"] and len(frame) == 2  # the empty bucket draws nothing
    assert frame["p embedding"].tolist() == [P_VALUE_FLOOR, 0.4]
    assert frame["requests per s"].tolist() == [50 / 300, 50 / 300]


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
