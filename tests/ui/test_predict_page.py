"""The Predict page's own checks of files before it sends them: readable by the model's
modality (`readable_files`) and within the server's limits (`over_the_limits`); the page itself
is driven in Chromium in test_pages.py."""

from __future__ import annotations

from pathlib import Path

from mlfactory.modalities import get_modality
from mlfactory.ui.predict_page import SentInput, over_the_limits, readable_files, texts_to_send

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
        "bd_ada.flac is 12,313 bytes: the API takes files of at most 12,312 bytes"
    )
    assert over_the_limits(chosen, {"max_request_bytes": 17_257}) == (
        "the files come to 17,258 bytes: the API takes at most 17,257 a request"
    )


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
