"""The inputs the monitoring benchmark sends: real data, no shift and real shifts, per modality.

A pool is a list of raw inputs (file bytes or UTF-8 text, exactly what a client would send) with
their true labels where the bundle knows the class. Per bundle:

- `reference`: the validation split (what the profile is built from), or with `with_test` the
  validation and test splits together (`mlfactory profile --with-test`);
- `unseen`: inputs of the same source the model never saw (test split, unless it is in the
  reference, + items the per-class cap left out), drawn so that their label mix is the
  reference's: the no-shift windows;
- shifts: corrupted versions of the unseen inputs, a label-prior shift (a subset of classes),
  and inputs from another source; `kind` says which, `ood` marks the pools a perfect OOD score
  would flag ("far": another source; "near": classes of the same source never trained on).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from benchmarks.monitoring.bundles import SPEECH_LANGUAGES, UNSEEN_LANGUAGES
from PIL import Image, ImageFilter

from mlfactory.bundle import Bundle
from mlfactory.config.loader import load_recipe_from_dict
from mlfactory.config.schema import RecipeConfig
from mlfactory.data.dataset import Item, PreparedDataset
from mlfactory.data.prepare import prepare_dataset

MAX_POOL = 3000
MIXTURE_SHARE = 0.1
SEED = 7


@dataclass
class Pool:
    """Raw inputs of one condition.

    Attributes:
        name: e.g. "unseen", "rotated", "20newsgroups".
        kind: "reference", "none" (no shift), "corruption", "label-prior", "source", "classes",
            "mixture" (unseen inputs, a tenth of them replaced by another source's).
        raws: the inputs as a client sends them.
        labels: the true label of each, None where it is not one of the bundle's labels.
        ood: "far" or "near" for pools of out-of-distribution inputs, else None.
        subtle: a deliberately small shift (reported, no power target).
    """

    name: str
    kind: str
    raws: list[bytes]
    labels: list[str | None]
    ood: str | None = None
    subtle: bool = False


def bundle_dataset(bundle: Bundle) -> tuple[RecipeConfig, PreparedDataset]:
    """The recipe and prepared dataset the bundle was trained on (from the data cache)."""
    config = load_recipe_from_dict(bundle.meta.config).config
    return config, prepare_dataset(config)


def source_items(config: RecipeConfig, source: str, modality: str | None = None) -> list[Item]:
    """Every item of a data source, uncapped, prepared as the recipe would."""
    data = dataclasses.replace(config.data, source=source, max_per_class=None, min_per_class=None)
    other = dataclasses.replace(config, data=data, modality=modality or config.modality)
    return prepare_dataset(other).items


def reference_and_unseen(bundle: Bundle, with_test: bool = False) -> tuple[Pool, Pool, list[Item]]:
    """The validation split (and the test split, `with_test`), and unseen items of the same
    source with the same label mix."""
    config, dataset = bundle_dataset(bundle)
    reference = dataset.split("val") + (dataset.split("test") if with_test else [])
    used = {item.key for item in dataset.items if with_test or item.split != "test"}
    everything = source_items(config, config.data.source)
    candidates = [i for i in everything if i.key not in used and i.label in dataset.labels]
    unseen = _match_label_mix(candidates, reference, np.random.default_rng(SEED))
    return (
        Pool("reference", "reference", _raws(reference), [i.label for i in reference]),
        Pool("unseen", "none", _raws(unseen), [i.label for i in unseen]),
        unseen,
    )


def image_shifts(bundle: Bundle, unseen: list[Item]) -> list[Pool]:
    """Corrupted unseen digits, a label-prior shift and tuxpaint photos."""
    rng = np.random.default_rng(SEED)
    base = _sample(unseen, 1500, rng)
    labels: list[str | None] = [i.label for i in base]
    first_half = sorted(bundle.meta.labels)[: len(bundle.meta.labels) // 2]
    prior = [i for i in unseen if i.label in first_half]
    config, _ = bundle_dataset(bundle)
    stamps = _sample(source_items(config, "tuxpaint:stamps"), MAX_POOL, rng)
    corrupt = _image_corruptions(rng)
    pools = [
        Pool(name, "corruption", [fn(item.read_bytes()) for item in base], labels, subtle=subtle)
        for name, (fn, subtle) in corrupt.items()
    ]
    pools.append(
        Pool(f"labels {'+'.join(first_half)}", "label-prior", _raws(prior), _labels(prior))
    )
    pools.append(Pool("tuxpaint photos", "source", _raws(stamps), [None] * len(stamps), "far"))
    pools.append(_mixture("digits + 10 % photos", unseen, _raws(stamps), rng))
    return pools


def text_shifts(bundle: Bundle, unseen: list[Item]) -> list[Pool]:
    """20 Newsgroups, election tweets, and R8 without its most frequent class."""
    rng = np.random.default_rng(SEED)
    config, _ = bundle_dataset(bundle)
    counts: dict[str, int] = {}
    for item in unseen:
        counts[item.label] = counts.get(item.label, 0) + 1
    top = max(counts, key=lambda label: counts[label])
    prior = [i for i in unseen if i.label != top]
    news = _sample(source_items(config, "orange:20newsgroups"), MAX_POOL, rng)
    tweets = _sample(source_items(config, "orange:election-tweets"), MAX_POOL, rng)
    return [
        Pool(f"without '{top}'", "label-prior", _raws(prior), _labels(prior)),
        Pool("20 newsgroups", "source", _raws(news), [None] * len(news), "far"),
        Pool("election tweets", "source", _raws(tweets), [None] * len(tweets), "far"),
        _mixture("R8 + 10 % 20 newsgroups", unseen, _raws(news), rng),
    ]


def audio_shifts(bundle: Bundle, unseen: list[Item]) -> list[Pool]:
    """Noisy unseen clips, a label-prior shift, Sonic Pi + animal calls, unseen languages."""
    rng = np.random.default_rng(SEED)
    base = _sample(unseen, 1500, rng)
    labels: list[str | None] = [i.label for i in base]
    half = list(SPEECH_LANGUAGES[: len(SPEECH_LANGUAGES) // 2])
    prior = [i for i in unseen if i.label in half]
    config, _ = bundle_dataset(bundle)
    other = _raws(source_items(config, "sonic-pi:samples"))
    other += _raws(source_items(config, "tuxpaint:animals-audio"))
    speech = source_items(config, "tuxpaint:speech")
    languages = _raws(_sample([i for i in speech if i.label in UNSEEN_LANGUAGES], MAX_POOL, rng))
    return [
        Pool(
            "noise 10 dB", "corruption", [_noisy(i.read_bytes(), 10.0, rng) for i in base], labels
        ),
        Pool(
            "noise 30 dB",
            "corruption",
            [_noisy(i.read_bytes(), 30.0, rng) for i in base],
            labels,
            subtle=True,
        ),
        Pool(f"languages {'+'.join(half)}", "label-prior", _raws(prior), _labels(prior)),
        Pool("sonic-pi + animal calls", "source", other, [None] * len(other), "far"),
        _mixture("speech + 10 % unseen languages", unseen, languages, rng),
        Pool(
            f"languages {'+'.join(UNSEEN_LANGUAGES)}",
            "classes",
            languages,
            [None] * len(languages),
            "near",
        ),
    ]


def _mixture(name: str, unseen: list[Item], other: list[bytes], rng: np.random.Generator) -> Pool:
    """Unseen inputs with `MIXTURE_SHARE` of them replaced by inputs of another source."""
    base = _sample(unseen, 1800, rng)
    count = round(len(base) * MIXTURE_SHARE / (1 - MIXTURE_SHARE))
    foreign = [other[i] for i in rng.choice(len(other), min(count, len(other)), replace=False)]
    raws = _raws(base) + foreign
    labels = _labels(base) + [None] * len(foreign)
    order = rng.permutation(len(raws))
    return Pool(name, "mixture", [raws[i] for i in order], [labels[i] for i in order], subtle=True)


def _image_corruptions(
    rng: np.random.Generator,
) -> dict[str, tuple[Callable[[bytes], bytes], bool]]:
    def transform(edit: Callable[[Image.Image], Image.Image]) -> Callable[[bytes], bytes]:
        def apply(raw: bytes) -> bytes:
            with Image.open(io.BytesIO(raw)) as image:
                out = edit(image.convert("L"))
            buffer = io.BytesIO()
            out.save(buffer, format="PNG")
            return buffer.getvalue()

        return apply

    def rotate(low: float, high: float) -> Callable[[Image.Image], Image.Image]:
        return lambda im: im.rotate(float(rng.choice([-1, 1]) * rng.uniform(low, high)))

    def noise(image: Image.Image) -> Image.Image:
        pixels = np.asarray(image, dtype=np.float64) + rng.normal(0.0, 60.0, image.size[::-1])
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")

    return {
        "rotated 30-60°": (transform(rotate(30.0, 60.0)), False),
        "inverted": (transform(lambda im: Image.eval(im, lambda v: 255 - v)), False),
        "noisy sd=60": (transform(noise), False),
        "blurred r=1.5": (transform(lambda im: im.filter(ImageFilter.GaussianBlur(1.5))), False),
        "rotated 5-15°": (transform(rotate(5.0, 15.0)), True),
    }


def _noisy(raw: bytes, snr_db: float, rng: np.random.Generator) -> bytes:
    """White noise at `snr_db` below the clip's power, written back as Ogg Vorbis."""
    samples, rate = soundfile.read(io.BytesIO(raw), dtype="float64", always_2d=True)
    power = float(np.mean(samples**2)) or 1e-8
    noisy = samples + rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), samples.shape)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(noisy, -1.0, 1.0), rate, format="OGG", subtype="VORBIS")
    return buffer.getvalue()


def _match_label_mix(
    candidates: list[Item], reference: list[Item], rng: np.random.Generator
) -> list[Item]:
    """The largest subset of `candidates` whose label shares are the reference's."""
    want: dict[str, int] = {}
    for item in reference:
        want[item.label] = want.get(item.label, 0) + 1
    by_label: dict[str, list[Item]] = {label: [] for label in want}
    for item in candidates:
        if item.label in by_label:
            by_label[item.label].append(item)
    scale = min(len(by_label[label]) / count for label, count in want.items())
    chosen: list[Item] = []
    for label, count in want.items():
        members = by_label[label]
        take = int(count * scale)
        chosen += [members[i] for i in sorted(rng.choice(len(members), take, replace=False))]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def _sample(items: list[Item], size: int, rng: np.random.Generator) -> list[Item]:
    if len(items) <= size:
        return list(items)
    return [items[i] for i in sorted(rng.choice(len(items), size, replace=False))]


def _raws(items: list[Item]) -> list[bytes]:
    return [item.read_bytes() for item in items]


def _labels(items: list[Item]) -> list[str | None]:
    return [item.label for item in items]


def all_pools(bundle: Bundle, with_test: bool = False) -> list[Pool]:
    """Reference, unseen and every shift of the bundle's modality (`with_test`: the reference
    is the validation and test splits)."""
    reference, unseen_pool, unseen = reference_and_unseen(bundle, with_test)
    shifts = {"image": image_shifts, "text": text_shifts, "audio": audio_shifts}
    return [reference, unseen_pool, *shifts[bundle.meta.modality](bundle, unseen)]


def cache_key(path: Path) -> str:
    """Identifies a bundle's outputs: its creation time and model size."""
    meta = path / "bundle.json"
    return f"{int(meta.stat().st_mtime)}-{(path / 'model.onnx').stat().st_size}"
