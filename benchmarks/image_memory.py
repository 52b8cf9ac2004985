"""Peak memory and time of one image through the image encoder (decode + preprocess).

    python -m benchmarks.image_memory              # the table docs/benchmarks.md shows
    python -m benchmarks.image_memory --repeat 5   # more calls per image (best time, worst peak)

Each call runs in a fresh process (so memory freed by an earlier image cannot hide this one's
cost), after one warm-up image; its peak resident memory (Linux `VmHWM`, reset just before the
call via `/proc/self/clear_refs`) is reported above the RSS before the call: what one request's
image costs a server worker. The images are real data where the
project has it (an MNIST digit, a tuxpaint stamp), a real stamp scaled up to phone-photo and
to limit sizes, and the hostile files of issue 9 (a 370-byte 300000x1 PNG, strips at the
aspect limit, 16-bit and float images). The encoder is the `mushrooms` recipe's (resize 235,
crop 224), so each accepted image ends as a 3x224x224 float32 array (0.6 MB).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image
from tests.hostile_files import stripe_png
from tests.peak_rss import peak_rss_growth

from mlfactory.data.packaged import mnist_csv
from mlfactory.errors import InputError
from mlfactory.modalities import get_modality

STAMP = Path(__file__).parents[1] / "tests/fixtures/tuxpaint/stamps/food/fruit/banana.png"
PARAMS = {"resize_size": 235, "crop_size": 224}


def encoded(image: Image.Image, kind: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **options)
    return buffer.getvalue()


def digit() -> bytes:
    with gzip.open(mnist_csv(), "rt") as handle:
        row = np.asarray(handle.readline().split(",")[:-1], dtype=np.uint8)
    return encoded(Image.fromarray(row.reshape(28, 28), mode="L"), "PNG")


def stamp(size: tuple[int, int] | None = None, mode: str = "RGBA") -> Image.Image:
    image = Image.open(STAMP).convert(mode)
    return image if size is None else image.resize(size, Image.Resampling.BILINEAR)


def sixteen_bit(size: tuple[int, int]) -> bytes:
    grey = np.asarray(stamp(size, "L"), dtype=np.uint16) * 257
    return encoded(Image.fromarray(grey), "PNG")


def float_tiff(size: tuple[int, int]) -> bytes:
    grey = np.asarray(stamp(size, "L"), dtype=np.float32) / 255.0
    return encoded(Image.fromarray(grey), "TIFF")


# 40 MP is MAX_PIXELS, the largest image accepted; 7300 x 5479 = 39,996,700 pixels.
LIMIT = (7300, 5479)
CASES: list[tuple[str, Callable[[], bytes]]] = [
    ("MNIST digit, 28x28 greyscale PNG", digit),
    ("tuxpaint stamp, RGBA PNG", lambda: STAMP.read_bytes()),
    ("photo-sized JPEG, 4000x3000", lambda: encoded(stamp((4000, 3000), "RGB"), "JPEG")),
    ("photo-sized PNG, 4000x3000 RGB", lambda: encoded(stamp((4000, 3000), "RGB"), "PNG")),
    ("40 MP JPEG (the pixel limit)", lambda: encoded(stamp(LIMIT, "RGB"), "JPEG")),
    ("40 MP RGBA PNG (the pixel limit)", lambda: encoded(stamp(LIMIT), "PNG")),
    ("40 MP 16-bit greyscale PNG", lambda: sixteen_bit(LIMIT)),
    ("16 MP float32 TIFF", lambda: float_tiff((4000, 4000))),
    ("strip at the aspect limit, 20000x200 PNG", lambda: stripe_png(20_000, 200)),
    ("the probe's 300000x1 PNG (370 bytes)", lambda: stripe_png(300_000, 1)),
]


def measure_once(path: Path) -> dict[str, object]:
    """Encode the image file at `path` once in this process: peak MiB, milliseconds, outcome."""
    modality = get_modality("image")
    encoder = modality.encoder(modality.preprocessing(PARAMS))
    raw = path.read_bytes()
    encoder(digit())  # warm up: Pillow's plugins, numpy
    outcome = "encoded"
    with peak_rss_growth() as growth:
        started = time.perf_counter()
        try:
            encoder(raw)
        except InputError as exc:
            outcome = f"refused ({exc.status_code})"
        millis = (time.perf_counter() - started) * 1000.0
    if not growth.measured:
        raise SystemExit("needs Linux /proc/self/clear_refs to measure peak memory")
    return {"mib": growth.mib, "ms": millis, "outcome": outcome}


def measure(raw: bytes, repeat: int) -> dict[str, object]:
    """Worst peak and best time of `repeat` fresh processes encoding `raw`.

    The image is made here and handed over as a file: making it in the measuring process would
    leave freed memory there that the measured call could reuse unseen.
    """
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "image"
        path.write_bytes(raw)
        for _ in range(repeat):
            command = [sys.executable, "-m", "benchmarks.image_memory", "--file", str(path)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            runs.append(json.loads(output))
    worst = max(runs, key=lambda run: float(run["mib"]))
    return {**worst, "ms": min(float(run["ms"]) for run in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per image")
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)  # one measurement (a child)
    args = parser.parse_args()
    if args.file is not None:
        print(json.dumps(measure_once(args.file)))
        return
    print(
        f"Measured {datetime.now(UTC).isoformat(timespec='seconds')} on {platform.machine()}, "
        f"Python {platform.python_version()}, Pillow {Image.__version__}; one call per fresh "
        f"process; peak RSS above the RSS before the call, worst of {args.repeat}; time best "
        f"of {args.repeat}.\n"
    )
    print("| image | file size | outcome | peak RSS (MiB) | time (ms) |")
    print("|---|---:|---|---:|---:|")
    for name, make in CASES:
        raw = make()
        result = measure(raw, args.repeat)
        size = f"{len(raw) / 1024:,.1f} KiB"
        peak, millis = float(str(result["mib"])), float(str(result["ms"]))
        print(f"| {name} | {size} | {result['outcome']} | {peak:,.1f} | {millis:,.1f} |")


if __name__ == "__main__":
    main()
