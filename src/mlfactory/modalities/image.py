"""Image modality: decoding and the ONE preprocessing path used by training and serving.

Also what else is image-specific: the file check of data preparation, the logged summary of an
input, the training-time flip and the pixel baseline. Torch-free on purpose: the serving
process imports this module and nothing from training.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mlfactory.config.constraints import bounded
from mlfactory.errors import ConfigError, InputError
from mlfactory.modalities.base import (
    ApiInput,
    Augment,
    Baseline,
    Encoder,
    Modality,
    refusal,
    rounded,
)

INPUT_NAME = "pixel_values"
FILE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CONTENT_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff")
# The largest side a model input may have; larger crops are a configuration mistake.
MAX_SIDE = 4096
# The pixel baseline's images are this many pixels a side.
PIXEL_SIDE = 16
# Larger images than this are refused before their pixels are decoded (decompression bombs).
MAX_PIXELS = 40_000_000


@dataclass
class ImagePreprocessing:
    """Deterministic image preprocessing shared by training and serving."""

    resize_size: int = bounded(235, ge=1, le=MAX_SIDE)
    crop_size: int = bounded(224, ge=1, le=MAX_SIDE)
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])

    def cross_check(self, prefix: str) -> None:
        """The crop fits in the resized image; mean and std have one value per RGB channel."""
        if self.crop_size > self.resize_size:
            raise ConfigError(
                f"{prefix}crop_size: {self.crop_size} is larger than {prefix}resize_size "
                f"{self.resize_size}: use a crop_size <= resize_size"
            )
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != 3:
                raise ConfigError(f"{prefix}{name}: {values} must hold 3 numbers (R, G, B)")
        if any(value <= 0 for value in self.std):
            raise ConfigError(f"{prefix}std: {self.std} must hold numbers > 0")


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

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)

    def __call__(self, raw: bytes) -> dict[str, np.ndarray]:
        return {INPUT_NAME: preprocess_image(decode_image(raw), self.params)}

    def input_shapes(self) -> dict[str, list[int]]:
        """ONNX input shapes for one item (batch axis excluded)."""
        size = int(self.params["crop_size"])
        return {INPUT_NAME: [3, size, size]}

    def input_dtypes(self) -> dict[str, type[np.generic]]:
        """ONNX input element types."""
        return {INPUT_NAME: np.float32}


def flip_horizontal(
    arrays: dict[str, np.ndarray], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Random horizontal flip of image arrays (C, H, W), for training only."""
    if rng.random() < 0.5:
        return {name: a[..., ::-1].copy() for name, a in arrays.items()}
    return arrays


def pixel_features(raws: list[bytes]) -> np.ndarray:
    """Each image decoded, shrunk to PIXEL_SIDE x PIXEL_SIDE and flattened to [0, 1] values."""
    rows = []
    for raw in raws:
        image = decode_image(raw).resize((PIXEL_SIDE, PIXEL_SIDE), Image.Resampling.BILINEAR)
        rows.append(np.asarray(image, dtype=np.float32).ravel() / 255.0)
    return np.stack(rows)


class ImageModality(Modality):
    """Images: uploaded files (PNG, JPEG, GIF, WebP, BMP, TIFF), resized and centre-cropped."""

    name = "image"
    preprocessing_class = ImagePreprocessing
    api_input = ApiInput("files", CONTENT_TYPES, FILE_SUFFIXES)
    file_suffixes = FILE_SUFFIXES
    hf_feature = "Image"
    hf_default_suffix = ".png"

    def encoder(self, params: Mapping[str, Any], assets_dir: Path | None = None) -> Encoder:
        """Image encoders need no assets."""
        return ImageEncoder(params)

    def check_file(self, data: bytes) -> str | None:
        """Images must decode with the same `decode_image` serving uses."""
        return refusal(decode_image, data)

    def describe(
        self, raw: bytes, encoded: Mapping[str, np.ndarray], params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Size and format from the header; mean/std brightness (0-1) of the model's crop."""
        with Image.open(io.BytesIO(raw)) as image:  # reads the header only
            width, height = image.size
            kind = image.format
        pixels = encoded[INPUT_NAME]  # (3, H, W), normalised
        mean = np.asarray(params["mean"], dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(params["std"], dtype=np.float32).reshape(3, 1, 1)
        rgb = pixels * std + mean
        luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        return {
            "width": width,
            "height": height,
            "format": kind,
            "brightness_mean": rounded(luma.mean()),
            "brightness_std": rounded(luma.std()),
        }

    def augmentation(self) -> Augment | None:
        """A random horizontal flip."""
        return flip_horizontal

    def baseline(self, params: Mapping[str, Any]) -> Baseline:
        """Logistic regression on the standardised RGB pixels of a small thumbnail."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler

        model = make_pipeline(
            FunctionTransformer(pixel_features),
            StandardScaler(),
            LogisticRegression(max_iter=300),
        )
        return Baseline(f"logistic regression on {PIXEL_SIDE}x{PIXEL_SIDE} pixels", model)


MODALITY = ImageModality()
