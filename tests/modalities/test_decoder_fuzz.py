"""Fuzz the image, audio and text encoders: any bytes give model arrays or an `InputError`.

Hypothesis builds inputs near the formats (images of every mode and odd shapes in allowed and
refused formats, audio of every sample kind with NaN and huge samples, texts with controls and
invisible characters), takes the real fixture files (tuxpaint stamps and calls, Sonic Pi
samples, Reuters texts), mutates both (cut short, bytes overwritten), and adds plain random
bytes behind real magic numbers. For every input the encoder must either return finite arrays
of exactly the shapes and types the model takes, or raise the project's `InputError` with a 4xx
status and a one-line message; nothing else may escape. Each call's peak memory is measured
(Linux) and must stay under `MEMORY_BOUND_MIB`.

Bounded in time: a fixed number of examples per encoder, derandomized (the same inputs on every
run, so a failure reproduces), no example database.
"""

from __future__ import annotations

import gc
import io
import json
import mmap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mlfactory.errors import InputError
from mlfactory.modalities import get_modality
from mlfactory.modalities.base import Encoder
from tests import peak_rss
from tests.serving.tiny_bundles import AUDIO_PARAMS, write_tokenizer

FIXTURES = Path(__file__).parents[1] / "fixtures"
REAL = {
    "image": sorted(FIXTURES.rglob("*.png")),
    "audio": sorted([*FIXTURES.rglob("*.flac"), *FIXTURES.rglob("*.ogg")]),
}
EXAMPLES = 150
MEMORY_BOUND_MIB = 200
IMAGE_PARAMS = {"resize_size": 235, "crop_size": 224, "mean": [0.5] * 3, "std": [0.25] * 3}
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAGIC = {
    "image": [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"RIFF"],
    "audio": [b"RIFF", b"fLaC", b"OggS", b"ID3", b"FORM", b".snd"],
}


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` unchanged, cut short, or with a few bytes overwritten."""
    how = draw(st.sampled_from(["keep", "keep", "cut", "overwrite"]))
    if how == "keep" or not data:
        return data
    if how == "cut":
        return data[: draw(st.integers(0, len(data) - 1))]
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        buffer[draw(st.integers(0, len(buffer) - 1))] = draw(st.integers(0, 255))
    return bytes(buffer)


def near_magic(kind: str) -> st.SearchStrategy[bytes]:
    """Random bytes behind a real file signature: past the format sniffing, into the parser."""
    return st.builds(
        lambda magic, tail: magic + tail, st.sampled_from(MAGIC[kind]), st.binary(max_size=512)
    )


def real_files(kind: str) -> st.SearchStrategy[bytes]:
    """The project's real fixture files of a modality, mutated or not."""
    assert REAL[kind], f"no {kind} fixtures under {FIXTURES}"
    return st.sampled_from(REAL[kind]).map(Path.read_bytes).flatmap(mutated)


def real_texts() -> st.SearchStrategy[bytes]:
    rows = (FIXTURES / "text" / "reuters_r8_sample.jsonl").read_text().splitlines()
    texts = [json.loads(row)["text"].encode() for row in rows]
    return st.sampled_from(texts).flatmap(mutated)


IMAGE_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
IMAGE_FORMATS = ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "PPM", "ICO", "TGA"]
IMAGE_SIZES = st.one_of(
    st.tuples(st.integers(1, 48), st.integers(1, 48)),
    st.tuples(st.integers(1, 48), st.integers(1, 48)),
    st.tuples(st.integers(1, 4000), st.integers(1, 3)),  # strips: huge once resized
    st.tuples(st.integers(1, 3), st.integers(1, 4000)),
)


@st.composite
def images(draw: st.DrawFn) -> bytes:
    width, height = draw(IMAGE_SIZES)
    mode, kind = draw(st.sampled_from(IMAGE_MODES)), draw(st.sampled_from(IMAGE_FORMATS))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if mode == "F":
        values = rng.choice([0.0, 0.5, 1.0, 2.0, -1.0, np.nan], size=(height, width))
        image = Image.fromarray(values.astype(np.float32), mode="F")
    elif mode in ("I;16", "I"):
        dtype = np.uint16 if mode == "I;16" else np.int32
        image = Image.fromarray(rng.integers(0, 65536, (height, width)).astype(dtype))
    else:
        image = Image.new(mode, (width, height))
        image.frombytes(rng.bytes(len(image.tobytes())))
    return draw(mutated(saved(image, kind)))


def saved(image: Image.Image, kind: str) -> bytes:
    """`image` in format `kind`; as RGB when Pillow cannot write its mode there, as PNG when it
    cannot write the size there either (ICO)."""
    rgb = image.convert("RGB")
    for candidate, form in ((image, kind), (rgb, kind), (image, "PNG"), (rgb, "PNG")):
        buffer = io.BytesIO()
        try:
            candidate.save(buffer, format=form)
        except (OSError, ValueError, KeyError):
            continue
        return buffer.getvalue()
    raise AssertionError(f"Pillow wrote {image.mode} {image.size} in no format")


@st.composite
def audio_files(draw: st.DrawFn) -> bytes:
    rate = draw(st.sampled_from([1000, 8000, 22050, 44100]))
    frames, channels = draw(st.integers(0, 4000)), draw(st.integers(1, 2))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.0, 0.5, 1.0, 4.0, 1e6, 1e30]))
    samples = (rng.standard_normal((frames, channels)) * scale).astype(np.float32)
    if frames and draw(st.booleans()):
        samples[draw(st.integers(0, frames - 1)), 0] = draw(st.sampled_from([np.nan, np.inf]))
    kind, subtype = draw(
        st.sampled_from([("WAV", "FLOAT"), ("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", None)])
    )
    if subtype == "PCM_16" or kind == "OGG":
        samples = np.clip(np.nan_to_num(samples), -1.0, 1.0)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=kind, subtype=subtype)
    return draw(mutated(buffer.getvalue()))


TEXTS = st.one_of(
    real_texts(),
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.text(alphabet="\u200b\u200c\u200d\u2060\ufeff\x00 \t\n\u3164\u2800oil", max_size=40).map(
        str.encode
    ),
)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Encoder]:
    assets = tmp_path_factory.mktemp("tokenizer")
    write_tokenizer(assets / "tokenizer.json")
    params: Mapping[str, Mapping[str, Any]] = {
        "image": IMAGE_PARAMS,
        "audio": AUDIO_PARAMS,
        "text": {"max_length": 16},
    }
    return {
        name: get_modality(name).encoder(get_modality(name).preprocessing(dict(values)), assets)
        for name, values in params.items()
    }


def check_encodes_or_refuses(encoder: Encoder, raw: bytes) -> None:
    """Finite arrays of the model's shapes and types, or an InputError with a 4xx and one line."""
    with peak_rss.peak_rss_growth() as growth:
        try:
            arrays = encoder(raw)
        except InputError as exc:
            assert exc.status_code in (413, 415, 422), exc.status_code
            assert str(exc) and "\n" not in str(exc), repr(str(exc))
            arrays = None
    if growth.measured:
        assert growth.mib < MEMORY_BOUND_MIB, f"{growth.mib:.0f} MiB for {len(raw)} bytes"
    if arrays is None:
        return
    assert {name: list(a.shape) for name, a in arrays.items()} == encoder.input_shapes()
    assert {name: a.dtype.type for name, a in arrays.items()} == encoder.input_dtypes()
    for array in arrays.values():
        assert np.isfinite(array).all()


def fuzz(kind: str, strategy: st.SearchStrategy[bytes]) -> Callable[[dict[str, Encoder]], None]:
    @FUZZ
    @given(raw=strategy)
    def run(encoders: dict[str, Encoder], raw: bytes) -> None:
        check_encodes_or_refuses(encoders[kind], raw)

    return run


test_image_encoder_fuzz = fuzz("image", st.one_of(images(), near_magic("image"), st.binary()))
test_audio_encoder_fuzz = fuzz("audio", st.one_of(audio_files(), near_magic("audio"), st.binary()))
test_text_encoder_fuzz = fuzz("text", TEXTS)


def acceptance(encoder: Encoder, strategy: st.SearchStrategy[bytes]) -> float:
    """The share of generated inputs that `encoder` accepts."""
    accepted: list[bool] = []

    @settings(max_examples=60, deadline=None, derandomize=True, database=None)
    @given(raw=strategy)
    def count(raw: bytes) -> None:
        try:
            encoder(raw)
        except InputError:
            accepted.append(False)
        else:
            accepted.append(True)

    count()
    return sum(accepted) / len(accepted)


def test_the_fuzz_reaches_past_the_refusals(encoders: dict[str, Encoder]) -> None:
    """The strategies make inputs that decode, not only refusals (else the fuzz tests little)."""
    for kind, strategy in (("image", images()), ("audio", audio_files()), ("text", TEXTS)):
        assert 0.15 < acceptance(encoders[kind], strategy) < 1.0, kind


def test_peak_memory_is_measured_here() -> None:
    """Where /proc allows it (Linux, the CI), the memory bound above is really checked."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("no /proc/self/clear_refs: memory bounds are checked on Linux only")
    # Fresh pages, written once: a block from the allocator may reuse pages a test before this
    # one left resident (measured once on two xdist workers: 11 MiB for 64), and garbage
    # collected inside the block would lower the RSS it raises.
    gc.collect()
    with peak_rss.peak_rss_growth() as growth, mmap.mmap(-1, 64 * peak_rss.MIB) as block:
        page = b"\x01" * peak_rss.MIB
        for _ in range(64):
            block.write(page)
    assert growth.measured and growth.mib >= 60
