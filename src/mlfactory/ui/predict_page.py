"""The Predict page: upload files or paste text, see the probabilities, send feedback."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from mlfactory.modalities import get_modality
from mlfactory.modalities.base import Modality
from mlfactory.serving.settings import MEGABYTE  # 1024 * 1024, as Streamlit's upload limit
from mlfactory.ui.client import ApiClient, ApiError

RESULT_KEY = "prediction"


@dataclass
class SentInput:
    """One input as sent to the API, kept to show it beside its prediction."""

    name: str
    data: bytes
    media_type: str


def render(client: ApiClient) -> None:
    """Draw the page: the input form, then the last answer (kept across reruns)."""
    st.header("Predict")
    try:
        model = client.model()
    except ApiError as exc:
        st.error(str(exc))
        return
    st.caption(
        f"{model['name']} {model['version']} · {model['modality']} · "
        f"labels: {', '.join(model['labels'])}"
    )
    modality = get_modality(model["modality"])
    api_input = modality.api_input
    limits = model.get("limits") or {}  # older servers say none: the API checks alone
    with st.form("predict-form"):
        if api_input.kind == "texts":
            text = st.text_area(
                "Text to classify",
                key="text-input",
                height=150,
                max_chars=limits.get("max_text_chars"),
            )
            per_line = st.checkbox(
                "One text per line",
                key="text-per-line",
                help="Classify each line that is not blank as a text of its own, in one request.",
            )
            sent = texts_to_send(text, per_line)
        else:
            largest = limits.get("max_upload_bytes")
            uploads = st.file_uploader(
                f"Files to classify ({', '.join(api_input.suffixes)})",
                accept_multiple_files=True,
                key="file-input",
                # whole MiB: the API's exact limit is checked below
                max_upload_size=math.ceil(largest / MEGABYTE) if largest else None,
            )
            sent = [SentInput(u.name, u.getvalue(), u.type or "") for u in uploads or []]
        submitted = st.form_submit_button("Classify")
    if submitted:
        _submit(client, modality, sent, limits)
    result = st.session_state.get(RESULT_KEY)
    if result is not None:
        for note in result["left_out"]:
            st.warning(note)
        _show_result(client, result["response"], result["inputs"], model["labels"])


def _submit(
    client: ApiClient, modality: Modality, sent: list[SentInput], limits: dict[str, int]
) -> None:
    """Send what the API will take; keep its answer, and a note on each file left out."""
    st.session_state.pop(RESULT_KEY, None)
    left_out: list[str] = []
    if modality.api_input.kind == "files":
        sent, left_out = readable_files(sent, modality)
    too_much = over_the_limits(sent, limits, modality.api_input.kind)
    if too_much:
        st.warning(too_much)
        return
    if not sent:
        for note in left_out:
            st.warning(note)
        st.warning("Nothing to classify: paste a text or choose files first.")
        return
    response = _classify(client, modality.api_input.kind, sent)
    if response is not None:
        st.session_state[RESULT_KEY] = {"response": response, "inputs": sent, "left_out": left_out}


def texts_to_send(text: str, per_line: bool) -> list[SentInput]:
    """The text field's input: the whole of it, or each line that is not blank (named by its
    line number); nothing when it is blank."""
    if not per_line:
        return [SentInput("text", text.encode(), "text/plain")] if text.strip() else []
    lines = enumerate(text.splitlines(), start=1)
    return [
        SentInput(f"line {n}", line.encode(), "text/plain") for n, line in lines if line.strip()
    ]


def readable_files(sent: list[SentInput], modality: Modality) -> tuple[list[SentInput], list[str]]:
    """The files the model can read, checked with the decoder the server uses
    (`Modality.check_file`), and a note on each one it cannot: one unreadable file would make
    the API refuse the whole request."""
    readable: list[SentInput] = []
    notes: list[str] = []
    for item in sent:
        reason = modality.check_file(item.data)
        if reason is None:
            readable.append(item)
        else:
            notes.append(f"{item.name} is left out: {reason}")
    return readable, notes


def over_the_limits(
    sent: list[SentInput], limits: dict[str, int], kind: str = "files"
) -> str | None:
    """Why the API would refuse these files for their number or size, or these texts for
    their number (`limits`: what `GET /v1/model` says one request may hold; `kind`: "files" or
    "texts"), said before they are sent; None if it would not."""
    most = limits.get("max_files")
    if most is not None and len(sent) > most:
        chosen = "files chosen" if kind == "files" else "texts"
        return f"{len(sent)} {chosen}: the API takes at most {most} a request"
    if kind != "files":
        return None  # the text field holds at most the longest text the API takes
    largest = limits.get("max_upload_bytes")
    for item in sent:
        if largest is not None and len(item.data) > largest:
            return (
                f"{item.name} is {len(item.data):,} bytes: the API takes files of at most "
                f"{largest:,} bytes"
            )
    body = limits.get("max_request_bytes")
    total = sum(len(item.data) for item in sent)
    if body is not None and total > body:
        return f"the files come to {total:,} bytes: the API takes at most {body:,} a request"
    return None


def _classify(client: ApiClient, kind: str, sent: list[SentInput]) -> dict[str, Any] | None:
    """The API's answer, or None after showing why it refused."""
    try:
        if kind == "texts":
            return client.predict_texts([item.data.decode() for item in sent])
        return client.predict_files([(i.name, i.data, i.media_type) for i in sent])
    except ApiError as exc:
        st.error(f"The API refused the input: {exc}")
        return None


def _show_result(
    client: ApiClient, response: dict[str, Any], inputs: list[SentInput], labels: list[str]
) -> None:
    model = response.get("model", {})
    st.caption(
        f"request {response['request_id']} · answered by {model.get('name')} {model.get('version')}"
    )
    for index, (item, prediction) in enumerate(zip(inputs, response["predictions"], strict=False)):
        with st.container(border=True, key=f"result-{index}"):
            _show_prediction(item, prediction)
            _feedback_control(client, response["request_id"], index, prediction, labels)


def _show_prediction(item: SentInput, prediction: dict[str, Any]) -> None:
    preview, scores = st.columns([1, 2])
    with preview:
        st.markdown(f"**{item.name}**")
        if item.media_type.startswith("image/"):
            st.image(item.data, width=160)
        elif item.media_type.startswith("audio/"):
            st.audio(item.data, format=item.media_type)
        else:
            st.text(item.data.decode(errors="replace")[:500])
    with scores:
        label, score = st.columns(2)
        label.metric("Predicted label", prediction["label"])
        score.metric("Score", f"{prediction['score']:.3f}")
        # null (or absent) when the bundle has no reference profile to score inputs against
        if isinstance(prediction.get("in_distribution"), bool):
            ood = prediction.get("ood_score")
            detail = f" (OOD score {ood:.3g})" if isinstance(ood, int | float) else ""
            if prediction["in_distribution"]:
                st.success(f"In distribution{detail}")
            else:
                st.warning(f"Out of distribution: unlike the training data{detail}")
        probabilities = pd.DataFrame(
            {"probability": list(prediction["probabilities"].values())},
            index=pd.Index(list(prediction["probabilities"]), name="label"),
        )
        st.bar_chart(probabilities, horizontal=True, height=max(120, 28 * len(probabilities)))


def _feedback_control(
    client: ApiClient, request_id: str, index: int, prediction: dict[str, Any], labels: list[str]
) -> None:
    key = f"feedback-{request_id}-{index}"
    choice, send = st.columns([2, 1], vertical_alignment="bottom")
    label = choice.selectbox(
        "The right label is", labels, index=labels.index(prediction["label"]), key=key
    )
    if send.button("Send feedback", key=f"{key}-send"):
        try:
            client.feedback(request_id, index, str(label))
        except ApiError as exc:
            st.error(f"Feedback not recorded: {exc}")
        else:
            st.success(f"Feedback recorded: input {index} is '{label}'.")
