"""Per-modality checks that an item can be read: each returns why not, or None when it can.

Images must decode with the same `decode_image` serving uses; audio must decode with soundfile
to at least one finite frame and last no longer than serving accepts (`MAX_SECONDS`); text must
be non-empty once stripped.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from types import ModuleType

import numpy as np

from mlfactory.errors import DataError, InputError
from mlfactory.modalities.audio import MAX_SECONDS
from mlfactory.modalities.image import decode_image

# soundfile names the in-memory buffer in its messages; that text differs on every run.
_BUFFER_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def require_soundfile() -> ModuleType:
    """The soundfile module.

    Raises:
        DataError: soundfile is not installed.
    """
    try:
        import soundfile
    except ImportError:
        raise DataError("audio data needs the soundfile package: pip install soundfile") from None
    return soundfile


def check_image(data: bytes) -> str | None:
    """Why `data` is not a usable image, or None."""
    try:
        decode_image(data)
    except InputError as exc:
        return str(exc)
    return None


def check_audio(data: bytes) -> str | None:
    """Why `data` is not usable audio, or None."""
    if not data:
        return "empty file"
    soundfile = require_soundfile()
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as audio:
            # Serving refuses longer recordings (413): training on one would fail in the loader.
            seconds = audio.frames / audio.samplerate
            if seconds > MAX_SECONDS:
                return f"audio too long: {seconds:.0f} s exceeds the limit of {MAX_SECONDS:.0f} s"
            samples = audio.read(dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, TypeError, EOFError) as exc:
        # soundfile.LibsndfileError is a RuntimeError; short garbage can raise the others.
        return f"not readable audio: {_BUFFER_REPR.sub('the file', str(exc))}"
    if samples.shape[0] == 0:
        return "audio has no frames"
    if not np.isfinite(samples).all():
        return "audio holds NaN or infinite samples"
    return None


def check_text(text: str) -> str | None:
    """Why `text` is not a usable text, or None."""
    return None if text.strip() else "empty text"


def checker_for(modality: str) -> Callable[[bytes], str | None]:
    """The byte-level check of a file modality (image or audio).

    Raises:
        DataError: an unknown or non-file modality.
    """
    if modality == "image":
        return check_image
    if modality == "audio":
        require_soundfile()  # fail once, up front, rather than once per file
        return check_audio
    raise DataError(f"modality '{modality}' has no file check: use image or audio")
