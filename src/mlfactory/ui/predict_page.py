"""The Predict page: upload files or paste text, see the probabilities, send feedback.

The model's name and labels, the API's messages and the files' names are not ours: each goes
through `plain` (an API's message through `message`) before Streamlit renders it as Markdown.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from mlfactory.modalities import get_modality
from mlfactory.modalities.base import Modality
from mlfactory.ui.client import ApiClient, ApiError
from mlfactory.ui.input_checks import (
    SentInput,
    limits_text,
    over_the_limits,
    readable_files,
    texts_to_send,
    uploader_megabytes,
)
from mlfactory.ui.markdown_text import message, plain

RESULT_KEY = "prediction"
# The audio a browser plays (Chromium, Firefox: WAV, FLAC, Ogg, MP3); AIFF and AU it does not.
PLAYED_AUDIO = frozenset(
    {
        *("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"),
        *("audio/flac", "audio/x-flac", "audio/ogg", "audio/mpeg", "audio/mp3"),
    }
)


def render(client: ApiClient) -> None:
    """Draw the page: the input form, then the last answer (kept across reruns)."""
    st.header("Predict")
    try:
        model = client.model()
    except ApiError as exc:
        st.error(message(exc))
        return
    st.caption(
        f"{plain(model['name'])} {plain(model['version'])} · {plain(model['modality'])} · "
        f"labels: {plain(', '.join(model['labels']))}"
    )
    modality = get_modality(model["modality"])
    limits = model.get("limits") or {}  # older servers say none: the API checks alone
    with st.form("predict-form"):
        sent = _input_fields(modality, limits)
        submitted = st.form_submit_button("Classify")
    if submitted:
        _submit(client, modality, sent, limits, model["labels"])
    result = st.session_state.get(RESULT_KEY)
    if result is not None:
        for note in result["left_out"]:
            st.warning(message(note))
        _show_result(client, result, model)


def _input_fields(modality: Modality, limits: dict[str, int]) -> list[SentInput]:
    """The form's fields for the modality's input, and what they hold."""
    api_input = modality.api_input
    if api_input.kind == "texts":
        # No `max_chars`: the field would cut what is pasted past it, silently; each text is
        # checked against the API's limit before sending instead.
        text = st.text_area("Text to classify", key="text-input", height=150)
        per_line = st.checkbox(
            "One text per line",
            key="text-per-line",
            help="Classify each line that is not blank as a text of its own, in one request.",
        )
        sent = texts_to_send(text, per_line)
    else:
        uploads = st.file_uploader(
            f"Files to classify ({', '.join(api_input.suffixes)})",
            accept_multiple_files=True,
            key="file-input",
            max_upload_size=uploader_megabytes(limits.get("max_upload_bytes")),
        )
        sent = [SentInput(u.name, u.getvalue(), u.type or "") for u in uploads or []]
    stated = limits_text(limits, api_input.kind)
    if stated:
        st.caption(stated)
    return sent


def _submit(
    client: ApiClient,
    modality: Modality,
    sent: list[SentInput],
    limits: dict[str, int],
    labels: list[str],
) -> None:
    """Send what the API will take; keep its answer, the model's labels, and a note on each
    file left out."""
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
            st.warning(message(note))
        st.warning("Nothing to classify: paste a text or choose files first.")
        return
    response = _classify(client, modality.api_input.kind, sent)
    if response is not None:
        st.session_state[RESULT_KEY] = {
            "response": response,
            "inputs": sent,
            "left_out": left_out,
            "labels": labels,
        }


def _classify(client: ApiClient, kind: str, sent: list[SentInput]) -> dict[str, Any] | None:
    """The API's answer, or None after showing why it refused."""
    try:
        if kind == "texts":
            return client.predict_texts([item.data.decode() for item in sent])
        return client.predict_files([(i.name, i.data, i.media_type) for i in sent])
    except ApiError as exc:
        st.error(f"The API refused the input: {message(exc)}")
        return None


def stale_note(result: dict[str, Any], model: dict[str, Any]) -> str | None:
    """Why a kept result is no longer the served model's (a reload swapped it since), so its
    feedback would name labels of another model; None while it still is."""
    answered = result["response"].get("model") or {}
    then = f"{answered.get('name')} {answered.get('version')}"
    now = f"{model['name']} {model['version']}"
    again = "classify again to send feedback"
    if then != now:
        return f"These predictions came from {then}; the server now serves {now}: {again}."
    if result["labels"] != model["labels"]:
        return (
            f"These predictions came from {then} with the labels {', '.join(result['labels'])}; "
            f"it now has the labels {', '.join(model['labels'])}: {again}."
        )
    return None


def _show_result(client: ApiClient, result: dict[str, Any], model: dict[str, Any]) -> None:
    response = result["response"]
    answered = response.get("model") or {}
    st.caption(
        f"request {plain(response['request_id'])} · answered by {plain(answered.get('name'))} "
        f"{plain(answered.get('version'))}"
    )
    stale = stale_note(result, model)
    if stale:
        st.warning(plain(stale))
    predictions = zip(result["inputs"], response["predictions"], strict=False)
    for index, (item, prediction) in enumerate(predictions):
        with st.container(border=True, key=f"result-{index}"):
            _show_prediction(item, prediction)
            if not stale:
                _feedback_control(client, response["request_id"], index, prediction, model)


def _show_prediction(item: SentInput, prediction: dict[str, Any]) -> None:
    preview, scores = st.columns([1, 2])
    with preview:
        st.markdown(f"**{plain(item.name)}**")
        _preview(item)
    with scores:
        label, score = st.columns(2)
        label.metric("Predicted label", plain(prediction["label"]))
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


def _preview(item: SentInput) -> None:
    """The input as the browser shows it: an image, a player for audio it plays, a text; else
    a note (the browser's media type says nothing it can show, e.g. a file without suffix)."""
    media_type = item.media_type.lower()
    if media_type.startswith("image/"):
        st.image(item.data, width=160)
    elif media_type in PLAYED_AUDIO:
        st.audio(item.data, format=media_type)
    elif media_type == "text/plain":
        st.text(item.data.decode(errors="replace")[:500])
    else:
        kind = media_type or "no media type"
        st.caption(f"No preview of {plain(item.name)} ({plain(kind)}, {len(item.data):,} bytes).")


def _feedback_control(
    client: ApiClient,
    request_id: str,
    index: int,
    prediction: dict[str, Any],
    model: dict[str, Any],
) -> None:
    key = f"feedback-{request_id}-{index}"
    labels: list[str] = model["labels"]
    choice, send = st.columns([2, 1], vertical_alignment="bottom")
    predicted = labels.index(prediction["label"]) if prediction["label"] in labels else None
    label = choice.selectbox("The right label is", labels, index=predicted, key=key)
    if send.button("Send feedback", key=f"{key}-send"):
        if label is None:
            st.warning("Choose the right label first.")
            return
        try:
            client.feedback(request_id, index, str(label))
        except ApiError as exc:
            st.error(f"Feedback not recorded: {message(exc)}")
        else:
            st.success(f"Feedback recorded: input {index} is '{plain(label)}'.")
