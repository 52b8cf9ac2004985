"""Each modality's data-preparation check (`Modality.check_file`) on real and broken files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile

from mlfactory.modalities import get_modality

FIXTURES = Path(__file__).parents[1] / "fixtures"
TUXPAINT = FIXTURES / "tuxpaint" / "stamps"
check_image = get_modality("image").check_file
check_audio = get_modality("audio").check_file
check_text = get_modality("text").check_file


def test_real_images_pass_and_broken_ones_say_why() -> None:
    stamp = (TUXPAINT / "animals" / "mammals" / "echidna.png").read_bytes()
    assert check_image(stamp) is None
    assert check_image(b"") == "empty file: it has no bytes"
    assert "truncated" in (check_image(stamp[:-200]) or "")
    assert "not an image" in (check_image(b"GIF89a? no") or "")


@pytest.mark.parametrize("name", ["bd_fat.flac", "tabla_ke1.flac"])
def test_real_audio_passes_and_cut_audio_does_not(name: str) -> None:
    clip = (FIXTURES / "sonic-pi" / "samples" / name).read_bytes()
    assert check_audio(clip) is None
    assert (check_audio(clip[: len(clip) // 3]) or "").startswith("not readable audio")
    assert check_audio(b"") == "empty file: it has no bytes"  # as the server says it


def test_ogg_calls_pass() -> None:
    assert check_audio((TUXPAINT / "animals" / "birds" / "quetzal.ogg").read_bytes()) is None


def test_text_must_be_utf8_with_content() -> None:
    assert check_text(b"oil prices rose") is None
    assert check_text(b" \n\t") == "empty text: the input is whitespace only"
    assert "not valid UTF-8" in (check_text(b"\xff\xfe broken") or "")
    assert "only invisible characters" in (check_text("\u200b\u200c\n".encode()) or "")


def test_audio_without_frames_or_with_nan_is_refused() -> None:
    def wav(samples: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        soundfile.write(buffer, samples, 16000, format="WAV", subtype="FLOAT")
        return buffer.getvalue()

    assert check_audio(wav(np.zeros(0, dtype=np.float32))) == "audio has no frames"
    assert check_audio(wav(np.array([0.0, np.nan], dtype=np.float32))) == (
        "corrupt audio: the file holds NaN or infinite samples"
    )
    assert "over 1000 times full scale" in (check_audio(wav(np.full(160, 1e30, np.float32))) or "")
    assert check_audio(wav(np.zeros(160, dtype=np.float32))) is None
    assert check_audio(wav(np.full(160, 1.5, dtype=np.float32))) is None  # a little headroom


def test_audio_longer_than_serving_accepts_is_refused_before_decoding() -> None:
    # 1 kHz keeps the 10-minute file small; the limit is on duration, not size.
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(601_000, dtype=np.int16), 1000, format="WAV")
    assert check_audio(buffer.getvalue()) == "audio too long: 601 s exceeds the limit of 600 s"
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(599_000, dtype=np.int16), 1000, format="WAV")
    assert check_audio(buffer.getvalue()) is None
