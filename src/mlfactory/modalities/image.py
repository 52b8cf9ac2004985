"""Image modality: decoding and the ONE preprocessing path used by training and serving.

Also what else is image-specific: the file check of data preparation, the logged summary of an
input, the training-time flip and the pixel baseline. Torch-free on purpose: the serving
process imports this module and nothing from training.
"""

from __future__ import annotations

import io
import math
import re
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
    EMPTY_FILE,
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
# Images whose long side is more than this many times the short one are refused: a strip of
# pixels is no picture of anything, and scaling its short side up makes it enormous.
MAX_ASPECT_RATIO = 100
# Up to this aspect ratio the whole image is resized before cropping, exactly as torchvision
# does; beyond it only the crop's part is resized, so the work stays a few crops' worth.
EXACT_RESIZE_MAX_ASPECT = 4
# The only Pillow formats tried on the bytes: no other plugin (EPS, which would run
# Ghostscript; PSD; ICO; ...) ever parses an upload.
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
# Pillow's modes of unsigned 16-bit greyscale (PNG, TIFF), in either byte order, and the 8-bit
# value of each 16-bit one (0-65535 onto 0-255, rounded).
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
SIXTEEN_TO_EIGHT_BITS = ((np.arange(65536, dtype=np.uint32) * 255 + 32767) // 65535).astype(
    np.uint8
)


@dataclass
class ImagePreprocessing:
    """Deterministic image preprocessing shared by training and serving."""

    resize_size: int = bounded(235, ge=1, le=MAX_SIDE)
    crop_size: int = bounded(224, ge=1, le=MAX_SIDE)
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])

    def cross_check(self, prefix: str) -> None:
        """The crop fits in the resized image; mean and std have one finite value per RGB
        channel, and std's are > 0 (NaN or infinity would make every input NaN)."""
        if self.crop_size > self.resize_size:
            raise ConfigError(
                f"{prefix}crop_size: {self.crop_size} is larger than {prefix}resize_size "
                f"{self.resize_size}: use a crop_size <= resize_size"
            )
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != 3:
                raise ConfigError(f"{prefix}{name}: {values} must hold 3 numbers (R, G, B)")
            if not all(math.isfinite(value) for value in values):
                raise ConfigError(f"{prefix}{name}: {values} must hold finite numbers")
        if any(value <= 0 for value in self.std):
            raise ConfigError(f"{prefix}std: {self.std} must hold numbers > 0")


def decode_image(
    data: bytes, max_pixels: int = MAX_PIXELS, min_short_side: int | None = None
) -> Image.Image:
    """Decode image bytes into an RGB PIL image, refusing what is not a sane image.

    Only the formats of `FORMATS` are tried (no other Pillow plugin sees the bytes). Transparent
    images are composited on white (stamp cut-outs, logos), greyscale is expanded to three
    channels, 16-bit greyscale is scaled to 8 bits, float images in [0, 1] are scaled to 8 bits,
    and EXIF orientation is applied.

    Args:
        data: the file's bytes.
        max_pixels: the most pixels an image may have once decoded.
        min_short_side: the short side the caller will resize to. A JPEG is then decoded at the
            smallest DCT scale (1/2, 1/4 or 1/8) that keeps at least this many pixels on its
            short side (`Image.draft`), so a large photo costs what its output needs.

    Raises:
        InputError: empty data (422), not an image of an allowed format (415), too many pixels
            (413), an aspect ratio over `MAX_ASPECT_RATIO` (422), a mode that cannot be shown
            as 8-bit RGB (415, 422), or a truncated/corrupt file (422).
    """
    if not data:
        raise InputError(EMPTY_FILE, 422)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            _check_shape(image.size, max_pixels)
            if min_short_side is not None and image.format == "JPEG":
                image.draft(image.mode, _draft_size(image.size, min_short_side))
                _check_shape(image.size, max_pixels)
            image.load()
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(
            f"not an image: the file is none of the accepted formats ({', '.join(FORMATS)})",
            415,
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses sizes far over ours (its own limit) before `_check_shape` sees them.
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = (
            f"{int(pixels.group(1))} pixels exceeds the limit of {max_pixels} pixels"
            if pixels
            else "refused as a decompression bomb"
        )
        raise InputError(f"image too large: {size}", 413) from None
    except Exception as exc:  # decoders of untrusted bytes fail in many ways
        raise InputError(f"corrupt or truncated image: {exc}", 422) from None
    ImageOps.exif_transpose(image, in_place=True)  # no copy of an image that needs no turn
    return _to_rgb(_to_8_bit(image))


def _check_shape(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise InputError(
            f"image too large: {width}x{height} pixels exceeds the limit of {max_pixels} pixels",
            413,
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise InputError(
            f"image of {width}x{height} pixels: one side is more than {MAX_ASPECT_RATIO} times "
            "the other; crop it to the part to classify",
            422,
        )


def _draft_size(size: tuple[int, int], min_short_side: int) -> tuple[int, int]:
    """The size `Image.draft` must keep: the image scaled so its short side is `min_short_side`."""
    scale = min_short_side / min(size)
    return max(1, math.ceil(size[0] * scale)), max(1, math.ceil(size[1] * scale))


def _to_8_bit(image: Image.Image) -> Image.Image:
    """Single-channel 16-bit and float images as 8-bit greyscale (Pillow would clip them).

    16-bit values span 0-65535 and are scaled to 0-255; float values must lie in [0, 1]. Other
    wide modes (32-bit integers) have no agreed range and are refused.
    """
    if image.mode in SIXTEEN_BIT_MODES:
        # One table lookup per pixel: the 8-bit image is the only new full-size array.
        return Image.fromarray(SIXTEEN_TO_EIGHT_BITS[np.asarray(image)], mode="L")
    if image.mode == "F":
        values = np.array(image)  # a writable copy of the pixels, scaled in place below
        if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
            raise InputError(
                "float image with values outside [0, 1] (or NaN): save it as an 8- or 16-bit image",
                422,
            )
        np.rint(np.multiply(values, 255.0, out=values), out=values)
        return Image.fromarray(values.astype(np.uint8), mode="L")
    if image.mode == "I":
        raise InputError(
            "32-bit integer images are not supported: save it as an 8- or 16-bit image", 415
        )
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, transparent parts on white. Pasting through the alpha channel onto a white RGB
    image gives exactly `Image.alpha_composite` over white, without two more RGBA copies."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    try:
        if image.mode in ("RGBA", "LA", "PA"):
            rgba = image if image.mode == "RGBA" else image.convert("RGBA")
            rgb = Image.new("RGB", rgba.size, (255, 255, 255))
            rgb.paste(rgba, mask=rgba.getchannel("A"))
            return rgb
        return image if image.mode == "RGB" else image.convert("RGB")
    except ValueError as exc:  # a mode Pillow cannot convert, e.g. LAB
        raise InputError(f"image mode {image.mode} is not supported: {exc}", 415) from None


def preprocess_image(image: Image.Image, params: Mapping[str, Any]) -> np.ndarray:
    """Resize the shorter side, centre-crop, scale to [0, 1] and normalise.

    Same arithmetic as torchvision's `Resize(int)` + `CenterCrop`, which the seed trained with.
    An image more than `EXACT_RESIZE_MAX_ASPECT` times wider than high (or higher than wide)
    would resize to many times the crop's pixels: only the crop's part of it is resized then
    (`resize(box=...)`, within 2/255 of the full resize), so the cost is bounded by the output.

    Args:
        image: an RGB image (see `decode_image`).
        params: `resize_size`, `crop_size`, `mean`, `std` (see `ImagePreprocessing`).

    Returns:
        float32 array of shape (3, crop_size, crop_size).
    """
    resize_size, crop_size = int(params["resize_size"]), int(params["crop_size"])
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_long = int(resize_size * long / short)
    new_size = (resize_size, new_long) if width <= height else (new_long, resize_size)
    left = round((new_size[0] - crop_size) / 2.0)
    top = round((new_size[1] - crop_size) / 2.0)
    if long <= EXACT_RESIZE_MAX_ASPECT * short:
        resized = image.resize(new_size, Image.Resampling.BILINEAR)
        cropped = resized.crop((left, top, left + crop_size, top + crop_size))
    else:
        x_scale, y_scale = width / new_size[0], height / new_size[1]
        box = (
            left * x_scale,
            top * y_scale,
            (left + crop_size) * x_scale,
            (top + crop_size) * y_scale,
        )
        cropped = image.resize((crop_size, crop_size), Image.Resampling.BILINEAR, box=box)
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
        image = decode_image(raw, min_short_side=int(self.params["resize_size"]))
        return {INPUT_NAME: preprocess_image(image, self.params)}

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

    def test_input(self, params: Mapping[str, Any]) -> bytes:
        """A mid-grey PNG of the resize size: preprocessing that cannot give finite values
        (a std that overflows) fails on it."""
        side = int(params["resize_size"])
        buffer = io.BytesIO()
        Image.new("RGB", (side, side), (128, 128, 128)).save(buffer, format="PNG")
        return buffer.getvalue()

    def check_file(self, data: bytes) -> str | None:
        """Images must decode with the same `decode_image` serving uses."""
        return refusal(decode_image, data)

    def describe(
        self, raw: bytes, encoded: Mapping[str, np.ndarray], params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Size and format from the header; mean/std brightness (0-1) of the model's crop."""
        with Image.open(io.BytesIO(raw), formats=FORMATS) as image:  # reads the header only
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
