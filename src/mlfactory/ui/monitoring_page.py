"""The Monitoring page: drift checks, OOD rate, accuracy, latency and traffic over time.

Everything comes from `GET /v1/monitoring/drift` and `GET /v1/monitoring/history`. The
figures are drawn in a fragment, so "Refresh" fetches them again without reloading the app.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from mlfactory.ui.client import ApiClient, ApiError

DEFAULT_LAST = 1000
DEFAULT_BUCKETS = 12


def render(client: ApiClient) -> None:
    """Draw the page: the window settings, then the refreshable figures."""
    st.header("Monitoring")
    last_col, buckets_col = st.columns(2)
    last = int(
        last_col.number_input("Last predictions", 10, 1_000_000, DEFAULT_LAST, step=100, key="last")
    )
    buckets = int(buckets_col.number_input("Windows over time", 1, 100, DEFAULT_BUCKETS, key="bk"))
    _figures(client, last, buckets)


@st.fragment
def _figures(client: ApiClient, last: int, buckets: int) -> None:
    st.button("Refresh", key="refresh")  # a click reruns only this fragment: fresh figures
    try:
        report = client.drift(last)
        history = client.history(last, buckets)
    except ApiError as exc:
        if exc.status == 404:
            st.info(f"Monitoring: {exc}")
        else:
            st.error(str(exc))
        return
    _current(report)
    _over_time(history)


def _current(report: dict[str, Any]) -> None:
    window = report.get("window", {})
    st.subheader(f"The last {window.get('n', 0)} predictions")
    st.caption(f"from {window.get('from') or '-'} to {window.get('to') or '-'}")
    status = report.get("status")
    if report.get("drift"):
        st.error("Drift detected: at least one check rejects the reference distribution.")
    elif status == "insufficient data":
        st.info("Not enough predictions in the window to test for drift yet.")
    else:
        st.success("No drift detected.")
    ood, accuracy = report.get("ood", {}), report.get("accuracy", {})
    ood_col, estimated_col, live_col = st.columns(3)
    ood_col.metric(
        "Out-of-distribution rate",
        _pct(ood.get("fraction")),
        help=f"inputs scored above the threshold {_num(ood.get('threshold'))}",
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
        table = pd.DataFrame(checks)
        columns = [c for c in ("name", "kind", "statistic", "p_value", "drift") if c in table]
        st.table(table[columns].set_index("name"))
    for note in report.get("notes") or []:
        st.caption(note)


def _over_time(buckets: list[dict[str, Any]]) -> None:
    st.subheader("Over time")
    if not buckets:
        st.info("No predictions logged in this window yet.")
        return
    frame = pd.DataFrame(buckets)
    frame["to"] = pd.to_datetime(frame["to"])
    seconds = (frame["to"] - pd.to_datetime(frame["from"])).dt.total_seconds().clip(lower=1.0)
    frame["requests per s"] = frame["requests"] / seconds
    frame = frame.set_index("to")
    ood, accuracy = st.columns(2)
    ood.markdown("**Out-of-distribution rate**")
    ood.line_chart(frame[["ood_fraction"]])
    accuracy.markdown("**Estimated against live accuracy**")
    accuracy.line_chart(frame[["accuracy_estimated", "accuracy_live"]])
    latency, rate = st.columns(2)
    latency.markdown("**Latency (ms)**")
    latency.line_chart(frame[["latency_p50_ms", "latency_p95_ms"]])
    rate.markdown("**Request rate**")
    rate.bar_chart(frame[["requests per s"]])
    p_values = pd.DataFrame(list(frame["p_values"]), index=frame.index)
    if not p_values.empty:
        st.markdown("**Drift check p-values**")
        st.line_chart(p_values)


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, int | float) else "-"


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"
