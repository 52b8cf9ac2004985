"""The Model card page: `GET /v1/model/card`, drawn (see `mlfactory.model_card`)."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from mlfactory.card_text import number, ood_rate
from mlfactory.times import export_time
from mlfactory.ui.client import ApiClient, ApiError


def render(client: ApiClient) -> None:
    """Draw the served model's card."""
    try:
        card = client.card()
    except ApiError as exc:
        st.header("Model card")
        st.error(str(exc))
        return
    st.header(f"Model card: {card['name']} {card['version']}")
    st.caption(
        f"{card['modality']} classifier · {len(card['labels'])} labels: "
        f"{', '.join(card['labels'])} · exported {export_time(card.get('created_at'))}"
    )
    _metrics(card)
    _confusion_matrix(card)
    _training_data(card["data"])
    _lineage(card["lineage"])
    _reference_profile(card.get("reference_profile"))


def _metrics(card: dict[str, Any]) -> None:
    st.subheader("Test metrics")
    metrics = card["metrics"]
    accuracy, f1, items = st.columns(3)
    accuracy.metric("Accuracy", number(metrics["accuracy"]))
    f1.metric("Macro-F1", number(metrics["f1_macro"]))
    items.metric("Test items", metrics["test_items"] if metrics["test_items"] is not None else "-")
    _evaluated_on(metrics.get("data_fingerprint"), card["data"].get("fingerprint"))
    if metrics["unsupported_labels"]:
        st.info(
            "No test item of "
            + ", ".join(metrics["unsupported_labels"])
            + ": left out of macro-F1."
        )
    if card["per_class"]:
        table = pd.DataFrame(card["per_class"]).set_index("label")
        st.table(table.style.format("{:.3f}", subset=["precision", "recall", "f1"], na_rep="-"))
    else:
        st.info("This bundle stores no per-class scores (exported before they were recorded).")


def _evaluated_on(evaluated: str | None, trained: str | None) -> None:
    """Which data the scores were computed on, a warning when not the training data."""
    if not evaluated:
        return
    if trained and trained != evaluated:
        st.warning(
            f"Computed on data fingerprint `{evaluated}`: not the data the model was trained on "
            f"(`{trained}`); the recipe's data changed before `mlfactory evaluate` ran."
        )
    else:
        st.caption(f"Computed on data fingerprint `{evaluated}`.")


def _confusion_matrix(card: dict[str, Any]) -> None:
    st.subheader("Confusion matrix")
    matrix = card.get("confusion_matrix")
    if matrix is None:
        st.info("This bundle stores no confusion matrix.")
        return
    labels = card["labels"]
    cells = pd.DataFrame(
        [
            {"true": labels[row], "predicted": labels[col], "count": count}
            for row, counts in enumerate(matrix)
            for col, count in enumerate(counts)
        ]
    )
    base = alt.Chart(cells).encode(
        x=alt.X("predicted:N", sort=labels, title="predicted"),
        y=alt.Y("true:N", sort=labels, title="true"),
    )
    heat = base.mark_rect().encode(color=alt.Color("count:Q", scale=alt.Scale(scheme="blues")))
    dark = alt.datum.count > max(max(row) for row in matrix) / 2
    text = base.mark_text().encode(
        text="count:Q", color=alt.condition(dark, alt.value("white"), alt.value("black"))
    )
    size = max(240, 36 * len(labels))
    st.altair_chart((heat + text).properties(width=size, height=size), width="content")


def _training_data(data: dict[str, Any]) -> None:
    st.subheader("Training data")
    version = f"- **Version:** `{data['version']}`\n" if data.get("version") else ""
    st.markdown(
        f"- **Source:** `{data.get('source') or 'unknown'}`\n"
        + version
        + f"- **Fingerprint:** `{data.get('fingerprint') or 'unknown'}`"
    )
    counts = data.get("counts")
    if counts:
        table = pd.DataFrame(counts).fillna(0).astype(int)
        table.loc["all"] = table.sum()
        st.table(table)
    else:
        st.info("This bundle does not record its items per split.")


def _lineage(lineage: dict[str, Any]) -> None:
    st.subheader("Lineage")
    st.markdown(
        f"- **Git commit:** `{lineage.get('git_commit') or 'unknown'}`\n"
        f"- **MLflow run:** `{lineage.get('mlflow_run_id') or 'none'}`\n"
        f"- **Recipe:** `{lineage.get('recipe') or 'unknown'}`"
    )


def _reference_profile(profile: dict[str, Any] | None) -> None:
    st.subheader("Reference profile")
    if profile is None:
        st.info("None: this bundle has no monitoring reference profile.")
        return
    if profile.get("problem"):
        st.warning(profile["problem"])
        return
    features = ", ".join(f"{k} ({v})" for k, v in (profile.get("features") or {}).items())
    st.markdown(
        f"- **Built from:** {profile.get('source') or 'unknown'}, "
        f"{profile.get('reference_items') or '?'} items\n"
        f"- **Accuracy on it:** {number(profile.get('reference_accuracy'))}\n"
        f"- **OOD score:** {profile.get('ood_method') or '?'}, threshold "
        f"{number(profile.get('ood_threshold'))} ({ood_rate(profile)})\n"
        f"- **Calibration temperature:** {number(profile.get('temperature'))}\n"
        f"- **Input features checked for drift:** {features or 'none'}"
    )
