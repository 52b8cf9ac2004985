"""What the prediction log keeps about each input: a few numbers a drift check can compare.

Raw inputs are never stored (they may be large or private). Per modality the summary holds cheap
descriptive features, read from the file header or from the already-encoded model input, never
by decoding a second time:

- image: `width`, `height`, `format` and the mean/std `brightness` (0-1) of the model's crop;
- text: `chars`, `tokens` (before padding) and whether the text was `truncated`;
- audio: `duration_s`, `sample_rate`, `channels` and `mean_db`, the mean log-mel level of the
  clip the model heard (a loudness proxy).

Every summary also has `bytes`. The model's embedding is logged next to it, in its own column.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
DIGITS = 4


def summarize(
    modality: str, raw: bytes, encoded: Mapping[str, np.ndarray], params: Mapping[str, Any]
) -> dict[str, Any]:
    """The logged summary of one valid input (never raises: a failure leaves fewer keys).

    Args:
        modality: the bundle's modality.
        raw: the input as received.
        encoded: what the modality's encoder made of it.
        params: the bundle's preprocessing parameters.
    """
    summary: dict[str, Any] = {"bytes": len(raw)}
    describe = {"image": _image, "text": _text, "audio": _audio}.get(modality)
    if describe is None:
        return summary
    try:
        summary.update(describe(raw, encoded, params))
    except Exception:  # a summary is a best effort; the prediction itself already succeeded
        log.warning("could not summarise a %s input", modality, exc_info=True)
    return summary


def _image(raw: bytes, encoded: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> Any:
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as image:  # reads the header only
        width, height = image.size
        kind = image.format
    pixels = next(iter(encoded.values()))  # (3, H, W), normalised
    mean = np.asarray(params["mean"], dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(params["std"], dtype=np.float32).reshape(3, 1, 1)
    rgb = pixels * std + mean
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return {
        "width": width,
        "height": height,
        "format": kind,
        "brightness_mean": round(float(luma.mean()), DIGITS),
        "brightness_std": round(float(luma.std()), DIGITS),
    }


def _text(raw: bytes, encoded: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> Any:
    summary: dict[str, Any] = {"chars": len(raw.decode("utf-8"))}
    mask = encoded.get("attention_mask")
    if mask is not None:
        tokens = int(np.asarray(mask).sum())
        summary.update(tokens=tokens, truncated=tokens >= int(params["max_length"]))
    return summary


def _audio(raw: bytes, encoded: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> Any:
    import soundfile

    info = soundfile.info(io.BytesIO(raw))
    return {
        "duration_s": round(info.frames / info.samplerate, DIGITS),
        "sample_rate": int(info.samplerate),
        "channels": int(info.channels),
        "mean_db": round(float(np.mean(next(iter(encoded.values())))), DIGITS),
    }
