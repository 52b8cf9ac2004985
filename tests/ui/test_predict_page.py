"""The Predict page's own checks before it sends anything (`mlfactory.ui.input_checks`):
readable by the model's modality, within the server's limits, and stated as the server states
them; and how it knows a kept result is of a model the server no longer serves. The page
itself is driven in Chromium in test_pages.py and test_stale_result.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlfactory.modalities import get_modality
from mlfactory.serving.settings import MEGABYTE
from mlfactory.ui.input_checks import (
    UPLOADER_MB,
    SentInput,
    limits_text,
    over_the_limits,
    readable_files,
    texts_to_send,
    uploader_megabytes,
)
from mlfactory.ui.predict_page import stale_note

SAMPLES = Path(__file__).parents[1] / "fixtures" / "sonic-pi" / "samples"


def clips(*names: str) -> list[SentInput]:
    return [SentInput(name, (SAMPLES / name).read_bytes(), "audio/flac") for name in names]


def test_files_within_every_limit_or_without_limits_pass() -> None:
    chosen = clips("bd_fat.flac", "bd_ada.flac")  # 4,945 and 12,313 bytes
    limits = {"max_files": 2, "max_upload_bytes": 12_313, "max_request_bytes": 17_258}
    assert over_the_limits(chosen, limits) is None
    assert over_the_limits(chosen, {}) is None  # an older server says none


def test_each_limit_is_named_with_the_figures() -> None:
    chosen = clips("bd_fat.flac", "bd_ada.flac")
    assert over_the_limits(chosen, {"max_files": 1}) == (
        "2 files chosen: the API takes at most 1 a request"
    )
    assert over_the_limits(chosen, {"max_upload_bytes": 12_312}) == (
        "bd_ada.flac is 12,313 bytes: the API takes files of at most 12,312 bytes (0.0117 MiB)"
    )
    assert over_the_limits(chosen, {"max_request_bytes": 17_257}) == (
        "the files come to 17,258 bytes: the API takes at most 17,257 a request"
    )


@pytest.mark.parametrize("largest", [10 * MEGABYTE, 10_000_001, 1_500_000, 2 * MEGABYTE, 10_000])
def test_the_uploader_refuses_nothing_the_server_takes(largest: int) -> None:
    """Streamlit's uploader counts 10**6 bytes a MB: rounded up, it lets through every file
    the server takes, and at most one MB more (which the page refuses before sending)."""
    megabytes = uploader_megabytes(largest)
    assert megabytes is not None
    assert (megabytes - 1) * UPLOADER_MB < largest <= megabytes * UPLOADER_MB
    assert uploader_megabytes(None) is None  # an older server: Streamlit's own default


def test_the_page_states_the_servers_limits() -> None:
    limits = {"max_files": 64, "max_text_chars": 10_000, "max_upload_bytes": 10 * MEGABYTE}
    assert limits_text(limits, "files") == (
        "The API takes up to 64 files a request, each of at most 10,485,760 bytes (10 MiB)."
    )
    assert limits_text(limits, "texts") == (
        "The API takes up to 64 texts a request, each of at most 10,000 characters."
    )
    assert limits_text({}, "files") is None


def test_files_the_modality_cannot_read_are_left_out_with_the_servers_reason() -> None:
    notes_file = SentInput("notes.flac", b"notes, not sound", "audio/flac")
    chosen = [*clips("bd_fat.flac"), notes_file, *clips("tabla_te1.flac")]
    audio = get_modality("audio")
    readable, notes = readable_files(chosen, audio)
    assert [item.name for item in readable] == ["bd_fat.flac", "tabla_te1.flac"]
    assert notes == [f"notes.flac is left out: {audio.check_file(b'notes, not sound')}"]
    assert notes[0].startswith("notes.flac is left out: not readable audio")


def test_the_text_field_is_one_text_or_one_per_line() -> None:
    article = "Oil prices fell.\n\n  \nOPEC ministers meet next week."
    whole = texts_to_send(article, per_line=False)
    assert [(item.name, item.data) for item in whole] == [("text", article.encode())]
    lines = texts_to_send(article, per_line=True)  # blank lines are no texts
    assert [(item.name, item.data.decode()) for item in lines] == [
        ("line 1", "Oil prices fell."),
        ("line 4", "OPEC ministers meet next week."),
    ]
    assert texts_to_send(" \n\t", per_line=False) == texts_to_send(" \n", per_line=True) == []
    assert over_the_limits(lines, {"max_files": 1}, "texts") == (
        "2 texts: the API takes at most 1 a request"
    )
    assert over_the_limits(lines, {"max_files": 2, "max_upload_bytes": 3}, "texts") is None


def test_each_text_is_held_to_the_longest_the_api_takes_not_the_whole_field() -> None:
    """Three lines of 48 characters pass a limit of 50 a text; a longer one is named by its
    line, and a whole text by itself; characters, not bytes, as the server counts them."""
    lines = ["x" * 48, "é" * 48, "y" * 48]
    assert (
        over_the_limits(texts_to_send("\n".join(lines), True), {"max_text_chars": 50}, "texts")
        is None
    )
    long = texts_to_send("\n".join([lines[0], "z" * 60, "", "w" * 51]), per_line=True)
    assert over_the_limits(long, {"max_text_chars": 50, "max_files": 3}, "texts") == (
        "line 2 has 60 characters, line 4 has 51 characters: "
        "the API takes texts of at most 50 characters"
    )
    whole = texts_to_send("\n".join(lines), per_line=False)  # 146 characters in one text
    assert over_the_limits(whole, {"max_text_chars": 50}, "texts") == (
        "text has 146 characters: the API takes texts of at most 50 characters"
    )
    many = texts_to_send("\n".join(["z" * 60] * 7), per_line=True)
    assert over_the_limits(many, {"max_text_chars": 50}, "texts") == (
        "line 1 has 60 characters, line 2 has 60 characters, line 3 has 60 characters, "
        "line 4 has 60 characters, line 5 has 60 characters (and 2 more): "
        "the API takes texts of at most 50 characters"
    )
    # the JSON body: {"texts":["xx…","éé…","yy…"]}, é is two bytes in UTF-8
    body = len('{"texts":["","",""]}') + 48 * 4
    fitting = texts_to_send("\n".join(lines), per_line=True)
    assert over_the_limits(fitting, {"max_request_bytes": body}, "texts") is None
    assert over_the_limits(fitting, {"max_request_bytes": body - 1}, "texts") == (
        f"the texts come to {body:,} bytes: the API takes at most {body - 1:,} a request"
    )


def test_a_result_of_another_model_or_labels_is_stale() -> None:
    answered = {"response": {"model": {"name": "digits", "version": "1"}}, "labels": ["5", "7"]}
    same = {"name": "digits", "version": "1", "labels": ["5", "7"]}
    assert stale_note(answered, same) is None
    assert stale_note(answered, {**same, "name": "tiny-image", "labels": ["cat", "dog"]}) == (
        "These predictions came from digits 1; the server now serves tiny-image 1: "
        "classify again to send feedback."
    )
    assert stale_note(answered, {**same, "labels": ["cat", "dog"]}) == (
        "These predictions came from digits 1 with the labels 5, 7; it now has the labels "
        "cat, dog: classify again to send feedback."
    )
