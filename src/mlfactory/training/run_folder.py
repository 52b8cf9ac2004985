"""The run folder: what a new run may replace, and what `--resume` continues with.

Nothing here imports torch or Lightning, so the CLI refuses an occupied `--out` or an unsafe
resume in a second, before the training stack is loaded.

A run folder holds `run.json` (the MLflow run id, the resolved recipe, the overrides and the
data fingerprint), `checkpoints/` (`last.ckpt` to resume from, `best.ckpt`), `bundle/`, and
with `trainer.profiler` the profiler's reports in `profiler/`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlfactory.bundle import META_FILE, MODEL_FILE
from mlfactory.config.loader import Recipe
from mlfactory.errors import ConfigError, first_line
from mlfactory.tracking import RUN_STATE_FILE, load_run_state, without_secrets
from mlfactory.training.stored_recipe import changed_keys, compose_stored

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "best.ckpt"
BUNDLE_DIR = "bundle"
PROFILER_DIR = "profiler"
LOCK_FILE = ".lock"
PARTIAL_BUNDLE_DIR = ".bundle.partial"  # a bundle being written; renamed to bundle/ when complete
# What a run writes at the top of its folder (besides its backbone's assets, e.g. a tokenizer).
RUN_ENTRIES = (
    RUN_STATE_FILE,
    CHECKPOINT_DIR,
    BUNDLE_DIR,
    PROFILER_DIR,
    LOCK_FILE,
    PARTIAL_BUNDLE_DIR,
    "confusion_matrix.png",
)
BUNDLE_FILES = (META_FILE, MODEL_FILE, "profile.json", "profile.npz")
# Keys `--resume` may change: they decide how long and where training runs, not what is
# learned from which data. Anything else (data, split, model, optimiser, preprocessing) would
# make the MLflow run, its checkpoint and its bundle disagree about what was trained.
RESUMABLE_KEYS = (
    "trainer.max_epochs",
    "trainer.patience",
    "trainer.num_workers",
    "trainer.encoded_cache_gb",
    "trainer.memory_format",
    "trainer.compile",
    "trainer.compile_mode",
    "trainer.profiler",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.strategy",
)


def check_new_run(out_dir: Path, force: bool) -> None:
    """Refuse to start a new run over a trained bundle or an interrupted run, unless `force`,
    and in any case over what no run wrote (see `check_out_folder`, `check_replaceable`).

    Raises:
        ConfigError: `out_dir` is not a folder a run may use, or holds a bundle or an
            interrupted run and `force` is not set.
    """
    check_out_folder(out_dir)
    check_replaceable(out_dir)
    if force:
        return
    _check_no_bundle(out_dir, "choose another --out, or add --force to replace it")
    if not (out_dir / CHECKPOINT_DIR / LAST_CHECKPOINT).is_file():
        return
    try:
        state = read_run_state(out_dir)
    except ConfigError:
        state = None
    if state is None:
        raise ConfigError(
            f"{out_dir} holds an interrupted run whose {RUN_STATE_FILE} is missing or damaged, "
            "so it cannot be resumed: add --force to start over"
        )
    raise ConfigError(
        f"{out_dir} holds an interrupted run: add --resume to continue it, or --force to start over"
    )


def check_out_folder(out_dir: Path) -> None:
    """`--out` must be absent, empty, or a run folder (it holds `run.json`, or only what a run
    writes, and hidden entries): never a file, a bundle, or a folder of other files, which a
    run would mix with its own or replace.

    Raises:
        ConfigError: `out_dir` is a file, a bundle folder, or a folder of other files.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file: give a folder")
    if not out_dir.is_dir():
        return
    names = {path.name for path in out_dir.iterdir()}
    if META_FILE in names:
        raise ConfigError(
            f"--out {out_dir} is a bundle folder (it holds {META_FILE}), not a run folder: "
            "choose another folder for the run"
        )
    # Hidden entries (`.git`, `.DS_Store`, a demo's mark) are left alone by a run: no reason
    # to refuse the folder for them.
    others = sorted(name for name in names - set(RUN_ENTRIES) if not name.startswith("."))
    if RUN_STATE_FILE in names or not others:
        return
    more = f" and {len(others) - 1} more" if len(others) > 1 else ""
    raise ConfigError(
        f"--out {out_dir} holds {others[0]}{more} and is not a run folder (no "
        f"{RUN_STATE_FILE}): choose an empty or new folder"
    )


def check_replaceable(out_dir: Path) -> None:
    """What a new (or resumed) run replaces in `checkpoints/` and `bundle/` must be what a run
    wrote: checkpoints, and a bundle's files (its assets are in the run folder too).

    Raises:
        ConfigError: either folder holds another file; the message names it.
    """
    assets = {path.name for path in out_dir.glob("*") if path.is_file()}
    allowed = {
        out_dir / CHECKPOINT_DIR: lambda name: name.endswith(".ckpt"),
        out_dir / BUNDLE_DIR: lambda name: name in BUNDLE_FILES or name in assets,
    }
    for folder, ours in allowed.items():
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if not ours(path.name):
                raise ConfigError(
                    f"{path} was not written by a training run, and this run would replace "
                    f"{folder.name}/: move it away, or choose another --out"
                )


def clear_previous_run(out_dir: Path) -> None:
    """Before a new run: remove the checkpoints, the bundle and the `run.json` an earlier run
    left (`check_replaceable` passed), so that `bundle/` never belongs to another run than
    `run.json`, and a new run stopped before it has an MLflow run (Ctrl-C while its data is
    prepared) leaves no `run.json` naming the old one."""
    for path in (out_dir / CHECKPOINT_DIR).glob("*.ckpt"):
        path.unlink()
    (out_dir / RUN_STATE_FILE).unlink(missing_ok=True)
    for folder in (out_dir / BUNDLE_DIR, out_dir / PARTIAL_BUNDLE_DIR):
        if folder.is_dir():
            shutil.rmtree(folder)


class FolderInUse(ConfigError):
    """Another training run holds the run folder: what this one refuses is that run's."""


@contextlib.contextmanager
def run_folder_lock(out_dir: Path) -> Iterator[None]:
    """Hold `out_dir/.lock` for the run: a second training into the same folder is refused.

    The lock (`flock`) goes with the process, even a killed one: no stale lock blocks a
    later run. Creates `out_dir`.

    Raises:
        FolderInUse: another run holds the folder.
        ConfigError: `out_dir` is a file.
    """
    check_out_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK_FILE, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUse(
                f"{out_dir} is in use by another training run: wait for it to end, or choose "
                "another --out"
            ) from None
        yield


def read_run_state(out_dir: Path) -> dict[str, Any] | None:
    """`run.json` of `out_dir`, None when there is none.

    Raises:
        ConfigError: it cannot be read or is not what a run writes (cut short, edited).
    """
    path = out_dir / RUN_STATE_FILE
    why = "not the state a run writes"
    state: Any
    try:
        state = load_run_state(out_dir)
    except (OSError, ValueError) as exc:  # json.JSONDecodeError and UnicodeDecodeError too
        state, why = [], first_line(exc)
    if state is None:
        return None
    if (
        isinstance(state, dict)
        and isinstance(state.get("mlflow_run_id"), str)
        and isinstance(state.get("recipe"), dict)
    ):
        return state
    raise ConfigError(
        f"{path} is damaged ({why}), so the run in {out_dir} cannot be resumed: start it again "
        "with --force (without --resume)"
    )


def resume_state(out_dir: Path, force: bool = False) -> dict[str, Any]:
    """The stored state of the interrupted (or finished) run in `out_dir`.

    Resuming a finished run trains it longer and replaces its bundle: that needs `force`.

    Raises:
        ConfigError: `out_dir` holds no run to resume (no `run.json` or no last checkpoint),
            its `run.json` is damaged, or it holds its bundle already and `force` is not set.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file: give a folder")
    state = read_run_state(out_dir)
    last = out_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    if state is None and last.is_file():
        raise ConfigError(
            f"--resume: {out_dir / RUN_STATE_FILE} is missing, so the run in {out_dir} cannot "
            "be resumed: start it again with --force (without --resume)"
        )
    if state is None or not last.is_file():
        raise ConfigError(f"--resume: no interrupted run in {out_dir} (no {last})")
    if not force:
        _check_no_bundle(
            out_dir, "--resume would train it longer and replace it: add --force to do so"
        )
    check_replaceable(out_dir)
    return state


def _check_no_bundle(out_dir: Path, fix: str) -> None:
    meta = out_dir / BUNDLE_DIR / META_FILE
    if not meta.is_file():
        return
    try:
        raw = json.loads(meta.read_text(encoding="utf-8"))
        what = f"the bundle '{raw['name']}' version {raw['version']}"
    except (OSError, ValueError, KeyError, TypeError):
        what = "a bundle"
    raise ConfigError(f"{out_dir} already holds {what}: {fix}")


def resume_recipe(
    reference: str, overrides: list[str], out_dir: Path, force: bool = False
) -> Recipe:
    """The recipe of the run to resume: the resolved recipe its `run.json` stored, then the new
    overrides, checked (`stored_recipe.compose_stored`: the recipe file is not needed, and an
    edit made to it since the run started is ignored, with a warning).

    Args:
        reference: the recipe name or path given on the command line (its name, for a run
            whose recipe file is gone).
        overrides: overrides given with `--resume`; only `RESUMABLE_KEYS` may change.
        out_dir: the run folder.
        force: resume a finished run too (replacing its bundle).

    Raises:
        ConfigError: no run to resume (see `resume_state`), or the overrides change a key
            that `--resume` must keep; the message names the keys.
    """
    state = resume_state(out_dir, force)
    stored = list(state.get("overrides", []))
    recipe = compose_stored(state, reference, overrides)
    # run.json keeps URLs without their passwords: a recipe file that holds one is the same
    changed = changed_keys(state["recipe"], without_secrets(recipe.resolved))
    refused = [key for key in changed if key not in RESUMABLE_KEYS]
    if refused:
        raise ConfigError(
            f"--resume cannot change {', '.join(refused)}: they change the data, the split or "
            f"the model of the run in {out_dir}; start a new run with another --out (resume "
            f"may change {', '.join(RESUMABLE_KEYS)})"
        )
    return Recipe(recipe.config, recipe.resolved, reference, [*stored, *overrides])


def check_same_data(state: dict[str, Any], fingerprint: str, out_dir: Path) -> None:
    """A resumed run must see the data it started with: otherwise items move between splits.

    Raises:
        ConfigError: the data's fingerprint differs from the one the run started with.
    """
    before = state.get("data_fingerprint")
    if before is not None and before != fingerprint:
        raise ConfigError(
            f"--resume: the data changed since the run in {out_dir} started (fingerprint "
            f"{before}, now {fingerprint}): start a new run with another --out"
        )


def clean_checkpoints(checkpoint_dir: Path, best_path: str) -> None:
    """Keep only `best.ckpt` and `last.ckpt` after a successful run.

    A resumed run may have written its best weights as `best-v1.ckpt`; they become `best.ckpt`.

    Args:
        checkpoint_dir: the run's checkpoint folder.
        best_path: the checkpoint callback's best model path ("" if none).
    """
    # By name: a resumed run's callback may hold the path of a folder the run moved from.
    best = checkpoint_dir / Path(best_path).name if best_path else None
    if best is not None and best.is_file() and best.name != BEST_CHECKPOINT:
        best.replace(checkpoint_dir / BEST_CHECKPOINT)
    for path in checkpoint_dir.glob("*.ckpt"):
        if path.name not in (BEST_CHECKPOINT, LAST_CHECKPOINT):
            path.unlink()


def resume_command(recipe: Recipe, out_dir: Path) -> str:
    """The command line that continues an interrupted run (`--force` too where its folder
    holds a bundle: an earlier finish of the run, which the resumed run replaces). Its paths
    are absolute: it works from any folder (the recipe file is not needed, `resume_recipe`)."""
    reference = recipe.reference or recipe.name
    if Path(reference).suffix in {".yaml", ".yml"}:
        reference = str(Path(reference).expanduser().resolve())
    words = ["mlfactory", "train", reference, "--out", str(out_dir.resolve())]
    words += ["--resume", *(["--force"] if (out_dir / BUNDLE_DIR / META_FILE).is_file() else [])]
    return shlex.join(words)
