"""The Model card page: `GET /v1/model/card`, drawn (see `mlfactory.model_card`).

Every string of the card comes from the bundle, which is not ours: each goes through `plain` or
`code` (an API's message through `message`) before Streamlit renders it as Markdown.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from mlfactory.card_text import number, ood_rate
from mlfactory.times import export_time
from mlfactory.ui.client import ApiClient, ApiError
from mlfactory.ui.markdown_text import code, message, plain, plain_table


def render(client: ApiClient) -> None:
    """Draw the served model's card."""
    try:
        card = client.card()
    except ApiError as exc:
        st.header("Model card")
        st.error(message(exc))
        return
    st.header(f"Model card: {plain(card['name'])} {plain(card['version'])}")
    st.caption(
        f"{plain(card['modality'])} classifier · {len(card['labels'])} labels: "
        f"{plain(', '.join(card['labels']))} · exported "
        f"{plain(export_time(card.get('created_at')))}"
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
            + plain(", ".join(metrics["unsupported_labels"]))
            + ": left out of macro-F1."
        )
    if card["per_class"]:
        table = plain_table(pd.DataFrame(card["per_class"]).set_index("label"))
        st.table(table.style.format("{:.3f}", subset=["precision", "recall", "f1"], na_rep="-"))
    else:
        st.info("This bundle stores no per-class scores (exported before they were recorded).")


def _evaluated_on(evaluated: str | None, trained: str | None) -> None:
    """Which data the scores were computed on, a warning when not the training data."""
    if not evaluated:
        return
    if trained and trained != evaluated:
        st.warning(
            f"Computed on data fingerprint {code(evaluated)}: not the data the model was trained "
            f"on ({code(trained)}); the recipe's data changed before `mlfactory evaluate` ran."
        )
    else:
        st.caption(f"Computed on data fingerprint {code(evaluated)}.")


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
    version = f"- **Version:** {code(data['version'])}\n" if data.get("version") else ""
    st.markdown(
        f"- **Source:** {code(data.get('source') or 'unknown')}\n"
        + version
        + f"- **Fingerprint:** {code(data.get('fingerprint') or 'unknown')}"
    )
    counts = data.get("counts")
    if counts:
        table = pd.DataFrame(counts).fillna(0).astype(int)
        table.loc["all"] = table.sum()
        st.table(plain_table(table))
    else:
        st.info("This bundle does not record its items per split.")


def _lineage(lineage: dict[str, Any]) -> None:
    st.subheader("Lineage")
    st.markdown(
        f"- **Git commit:** {code(lineage.get('git_commit') or 'unknown')}\n"
        f"- **MLflow run:** {code(lineage.get('mlflow_run_id') or 'none')}\n"
        f"- **Recipe:** {code(lineage.get('recipe') or 'unknown')}"
    )


def _reference_profile(profile: dict[str, Any] | None) -> None:
    st.subheader("Reference profile")
    if profile is None:
        st.info("None: this bundle has no monitoring reference profile.")
        return
    if profile.get("problem"):
        st.warning(message(profile["problem"]))
        return
    features = ", ".join(f"{k} ({v})" for k, v in (profile.get("features") or {}).items())
    st.markdown(
        f"- **Built from:** {plain(profile.get('source') or 'unknown')}, "
        f"{plain(profile.get('reference_items') or '?')} items\n"
        f"- **Accuracy on it:** {plain(number(profile.get('reference_accuracy')))}\n"
        f"- **OOD score:** {plain(profile.get('ood_method') or '?')}, threshold "
        f"{plain(number(profile.get('ood_threshold')))} ({plain(ood_rate(profile))})\n"
        f"- **Calibration temperature:** {plain(number(profile.get('temperature')))}\n"
        f"- **Input features checked for drift:** {plain(features or 'none')}"
    )
