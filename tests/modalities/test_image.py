"""Image decoding and preprocessing, on real images, against torchvision as the reference."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlfactory.errors import InputError
from mlfactory.modalities import get_encoder
from mlfactory.modalities.image import decode_image, preprocess_image

SEED_PARAMS = {
    "resize_size": 235,
    "crop_size": 224,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}
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
    encoder = get_encoder("image", {**SEED_PARAMS, "resize_size": 32, "crop_size": 32})
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
