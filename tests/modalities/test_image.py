"""Image decoding and preprocessing, on real images, against torchvision as the reference."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlfactory.errors import ConfigError, InputError
from mlfactory.modalities import get_modality
from mlfactory.modalities.image import decode_image, preprocess_image
from tests.hostile_files import EPS, stripe_png
from tests.peak_rss import peak_rss_growth

SEED_PARAMS = {
    "resize_size": 235,
    "crop_size": 224,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}
IMAGE = get_modality("image")
STAMPS = Path(__file__).parents[1] / "fixtures" / "tuxpaint" / "stamps"


def real_pngs() -> list[Path]:
    files = sorted(STAMPS.rglob("*.png"))
    assert files, f"no fixture images under {STAMPS}"
    return files[:6]


@pytest.mark.numerics
@pytest.mark.parametrize("path", real_pngs(), ids=lambda p: p.name)
def test_matches_torchvision_seed_transforms(path: Path) -> None:
    """Resize 235 -> CenterCrop 224 -> Normalize, exactly as the mushroom seed trained."""
    from torchvision import transforms

    image = decode_image(path.read_bytes())
    reference = transforms.Compose(
        [
            transforms.Resize(235),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(SEED_PARAMS["mean"], SEED_PARAMS["std"]),
        ]
    )(image).numpy()
    ours = preprocess_image(image, SEED_PARAMS)
    assert ours.shape == (3, 224, 224)
    assert ours.dtype == np.float32
    # Exact: the same PIL resize, then the same correctly rounded float32 operations
    # (/ 255, - mean, / std) in the same order, on every CPU.
    np.testing.assert_array_equal(ours, reference)


@pytest.mark.numerics
def test_golden_values_of_a_white_and_a_black_pixel() -> None:
    # float64 golden values; the code rounds mean and std to float32, then subtracts and
    # divides in float32: four roundings of 2**-24 (relative) at most.
    rtol = 4 * 2.0**-24
    image = Image.new("RGB", (300, 250), (255, 255, 255))
    out = preprocess_image(image, SEED_PARAMS)
    expected_white = (1.0 - np.array(SEED_PARAMS["mean"])) / np.array(SEED_PARAMS["std"])
    np.testing.assert_allclose(out[:, 100, 100], expected_white, rtol=rtol)
    black = preprocess_image(
        Image.new("RGB", (40, 40)), {**SEED_PARAMS, "resize_size": 32, "crop_size": 32}
    )
    expected_black = -np.array(SEED_PARAMS["mean"]) / np.array(SEED_PARAMS["std"])
    np.testing.assert_allclose(black[:, 0, 0], expected_black, rtol=rtol)


def test_transparent_stamp_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    rgba.putpixel((5, 5), (0, 0, 255, 255))
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    rgb = decode_image(buffer.getvalue())
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((5, 5)) == (0, 0, 255)


@pytest.mark.numerics
def test_greyscale_becomes_three_channels(digit_folder: Path) -> None:
    path = next(digit_folder.rglob("*.png"))
    encoder = get_modality("image").encoder({**SEED_PARAMS, "resize_size": 32, "crop_size": 32})
    arrays = encoder(path.read_bytes())
    assert arrays["pixel_values"].shape == (3, 32, 32)
    # Undoing each channel's normalisation gives the same grey level back, up to the float32
    # roundings of values below 1 on the way there and back (2**-24 each, four per channel).
    np.testing.assert_allclose(
        arrays["pixel_values"][0] * 0.229 + 0.485,
        arrays["pixel_values"][1] * 0.224 + 0.456,
        rtol=0,
        atol=8 * 2.0**-24,
    )


def test_bad_images_raise_input_errors_with_status() -> None:
    real = real_pngs()[0].read_bytes()
    cases = {
        b"": 422,
        b"plain text, not an image": 415,
        real[: len(real) // 2]: 422,
    }
    for data, status in cases.items():
        with pytest.raises(InputError) as caught:
            decode_image(data)
        assert caught.value.status_code == status


def test_decompression_bomb_is_refused_before_decoding() -> None:
    buffer = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 100_000
    with pytest.raises(InputError, match="too large") as caught:
        decode_image(buffer.getvalue(), max_pixels=50_000_000)
    assert caught.value.status_code == 413


def encoded(image: Image.Image, kind: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **options)
    return buffer.getvalue()


def test_a_strip_of_pixels_is_refused_before_it_is_resized() -> None:
    # The probe sent 300000x1 (370 bytes, 5.5 GB once resized); 3000x1 shows the same without
    # risking the machine's memory should this regress (0.5 GB once resized).
    data = stripe_png(3000, 1)
    assert len(data) < 1000
    encoder = get_modality("image").encoder(SEED_PARAMS)
    with peak_rss_growth() as growth, pytest.raises(InputError, match="3000x1") as caught:
        encoder(data)
    assert caught.value.status_code == 422
    assert growth.mib < 50
    assert get_modality("image").check_file(data) is not None  # refused in training data too
    with pytest.raises(InputError, match="300000x1"):
        decode_image(stripe_png(300_000, 1))  # refused from the header


def test_a_wide_image_resizes_only_the_crop() -> None:
    """Within the aspect limit, memory follows the crop, and pixels stay within 2/255 of the
    full resize that torchvision does."""
    from torchvision import transforms

    rng = np.random.default_rng(0)
    wide = Image.fromarray(rng.integers(0, 256, (100, 10_000, 3), dtype=np.uint8))
    params = {**SEED_PARAMS, "resize_size": 1000}  # a full resize: 100,000 x 1000 RGB, 300 MB
    with peak_rss_growth() as growth:
        out = preprocess_image(wide, params)
    assert out.shape == (3, 224, 224) and np.isfinite(out).all()
    assert growth.mib < 100
    strip = Image.fromarray(rng.integers(0, 256, (20, 400, 3), dtype=np.uint8))
    reference = transforms.Compose(
        [transforms.Resize(117), transforms.CenterCrop(100), transforms.ToTensor()]
    )(strip).numpy()
    ours = preprocess_image(strip, {**SEED_PARAMS, "resize_size": 117, "crop_size": 100})
    std, mean = (np.asarray(SEED_PARAMS[k]).reshape(3, 1, 1) for k in ("std", "mean"))
    assert np.abs(ours * std + mean - reference).max() <= 2 / 255 + 1e-5


def test_sixteen_bit_and_float_images_decode_like_their_8_bit_original(digit_folder: Path) -> None:
    original = Image.open(next(digit_folder.rglob("*.png")))
    pixels = np.asarray(original, dtype=np.uint16)
    eight_bit = np.asarray(decode_image(encoded(original, "PNG")))
    sixteen = Image.fromarray(pixels * 257)  # 0-255 spread over 0-65535
    assert sixteen.mode == "I;16"
    for kind in ("PNG", "TIFF"):
        decoded = decode_image(encoded(sixteen, kind))
        assert np.array_equal(np.asarray(decoded), eight_bit), kind
    floats = Image.fromarray(pixels.astype(np.float32) / 255.0)
    assert floats.mode == "F"
    assert np.array_equal(np.asarray(decode_image(encoded(floats, "TIFF"))), eight_bit)


@pytest.mark.parametrize(
    ("values", "status", "fragment"),
    [
        (np.full((8, 8), 2.5, dtype=np.float32), 422, "outside [0, 1]"),
        (np.full((8, 8), np.nan, dtype=np.float32), 422, "NaN"),
        (np.full((8, 8), 70_000, dtype=np.int32), 415, "32-bit integer"),
    ],
)
def test_wide_images_without_a_known_range_are_refused(
    values: np.ndarray, status: int, fragment: str
) -> None:
    data = encoded(Image.fromarray(values), "TIFF")
    with pytest.raises(InputError, match=re.escape(fragment)) as caught:
        decode_image(data)
    assert caught.value.status_code == status
    assert get_modality("image").check_file(data) is not None


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"])
def test_every_accepted_format_decodes(kind: str) -> None:
    stamp = decode_image(real_pngs()[0].read_bytes())
    decoded = decode_image(encoded(stamp, kind))
    assert decoded.mode == "RGB" and decoded.size == stamp.size


@pytest.mark.parametrize("kind", ["PPM", "ICO", "TGA", "PCX", "SGI", "EPS"])
def test_other_formats_never_reach_their_decoder(kind: str) -> None:
    stamp = decode_image(real_pngs()[0].read_bytes()).resize((32, 32))
    data = EPS if kind == "EPS" else encoded(stamp, kind)  # Pillow cannot write EPS
    with pytest.raises(InputError, match="none of the accepted formats") as caught:
        decode_image(data)
    assert caught.value.status_code == 415


def test_a_large_jpeg_is_decoded_at_the_scale_the_crop_needs() -> None:
    stamp = decode_image(real_pngs()[0].read_bytes())
    photo = encoded(stamp.resize((3000, 2000), Image.Resampling.BICUBIC), "JPEG", quality=95)
    assert decode_image(photo).size == (3000, 2000)
    drafted = decode_image(photo, min_short_side=235)
    assert drafted.size == (375, 250)  # 1/8 scale: the smallest that keeps 235 px on the short side
    encoder = get_modality("image").encoder(SEED_PARAMS)
    full = preprocess_image(decode_image(photo), SEED_PARAMS)
    ours = encoder(photo)["pixel_values"]
    assert ours.shape == full.shape
    assert np.abs(ours - full).mean() < 0.05  # 0.05 of a std: ~3 of 255 levels


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"mean": [0.5, float("nan"), 0.5]}, "preprocess.mean: [0.5, nan, 0.5] must hold finite"),
        ({"std": [0.2, 0.2, float("inf")]}, "preprocess.std: [0.2, 0.2, inf] must hold finite"),
        ({"std": [0.2, float("nan"), 0.2]}, "preprocess.std: [0.2, nan, 0.2] must hold finite"),
        ({"std": [0.2, -1.0, 0.2]}, "must hold numbers > 0"),
    ],
)
def test_preprocessing_refuses_non_finite_or_non_positive_mean_and_std(
    changes: dict[str, list[float]], fragment: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        IMAGE.preprocessing({**SEED_PARAMS, **changes})
    assert fragment in str(refused.value)


def test_the_test_input_is_a_grey_png_that_encodes_to_finite_values() -> None:
    params = IMAGE.preprocessing(SEED_PARAMS)
    raw = IMAGE.test_input(params)
    assert IMAGE.check_file(raw) is None and raw == IMAGE.test_input(params)
    with Image.open(io.BytesIO(raw)) as image:
        assert (image.format, image.size) == ("PNG", (235, 235))
        assert image.getextrema() == ((128, 128),) * 3
    (pixels,) = IMAGE.encoder(params)(raw).values()
    assert pixels.shape == (3, SEED_PARAMS["crop_size"], SEED_PARAMS["crop_size"])
    assert np.isfinite(pixels).all()
