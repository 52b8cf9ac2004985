"""Image modality: decoding and the ONE preprocessing path used by training and serving.

Torch-free on purpose: the serving process imports this module and nothing from training.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mlfactory.errors import InputError

INPUT_NAME = "pixel_values"
FILE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Larger images than this are refused before their pixels are decoded (decompression bombs).
MAX_PIXELS = 40_000_000


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode image bytes into an RGB PIL image, refusing what is not a sane image.

    Transparent images are composited on white (stamp cut-outs, logos), greyscale is
    expanded to three channels, and EXIF orientation is applied.

    Raises:
        InputError: empty data (422), not an image (415), too many pixels (413),
            or a truncated/corrupt file (422).
    """
    if not data:
        raise InputError("empty file: the upload has no bytes", 422)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise InputError(
                    f"image too large: {width}x{height} pixels exceeds the limit of "
                    f"{max_pixels} pixels",
                    413,
                )
            image.load()
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(
            "not an image: the file could not be identified as an image", 415
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError("image too large: refused as a decompression bomb", 413) from None
    except Exception as exc:  # decoders of untrusted bytes fail in many ways
        raise InputError(f"corrupt or truncated image: {exc}", 422) from None
    return _to_rgb(ImageOps.exif_transpose(image))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def preprocess_image(image: Image.Image, params: Mapping[str, Any]) -> np.ndarray:
    """Resize the shorter side, centre-crop, scale to [0, 1] and normalise.

    Args:
        image: an RGB image (see `decode_image`).
        params: `resize_size`, `crop_size`, `mean`, `std` (see `ImagePreprocessing`).

    Returns:
        float32 array of shape (3, crop_size, crop_size).
    """
    resize_size, crop_size = int(params["resize_size"]), int(params["crop_size"])
    if crop_size > resize_size:
        raise ValueError(f"crop_size {crop_size} is larger than resize_size {resize_size}")
    # Same arithmetic as torchvision's Resize(int) + CenterCrop, which the seed trained with.
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_long = int(resize_size * long / short)
    new_size = (resize_size, new_long) if width <= height else (new_long, resize_size)
    resized = image.resize(new_size, Image.Resampling.BILINEAR)
    left = round((new_size[0] - crop_size) / 2.0)
    top = round((new_size[1] - crop_size) / 2.0)
    cropped = resized.crop((left, top, left + crop_size, top + crop_size))
    pixels = np.asarray(cropped, dtype=np.float32) / 255.0
    mean = np.asarray(params["mean"], dtype=np.float32)
    std = np.asarray(params["std"], dtype=np.float32)
    normalised = (pixels - mean) / std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)


class ImageEncoder:
    """Turns raw image bytes into the model's input arrays."""

    modality = "image"

    def __init__(self, params: Mapping[str, Any], assets_dir: Path | None = None) -> None:
        self.params = dict(params)

    def __call__(self, raw: bytes) -> dict[str, np.ndarray]:
        return {INPUT_NAME: preprocess_image(decode_image(raw), self.params)}

    def input_shapes(self) -> dict[str, list[int]]:
        """ONNX input shapes for one item (batch axis excluded)."""
        size = int(self.params["crop_size"])
        return {INPUT_NAME: [3, size, size]}
