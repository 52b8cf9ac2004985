"""The run folder: what a new run may replace, and what `--resume` continues with.

Nothing here imports torch or Lightning, so the CLI refuses an occupied `--out` or an unsafe
resume in a second, before the training stack is loaded.

A run folder holds `run.json` (the MLflow run id, the resolved recipe, the overrides and the
data fingerprint), `checkpoints/` (`last.ckpt` to resume from, `best.ckpt`), `bundle/`, and
with `trainer.profiler` the profiler's reports in `profiler/`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlfactory.bundle import META_FILE
from mlfactory.config.loader import Recipe, load_recipe
from mlfactory.config.schema import RecipeConfig
from mlfactory.errors import ConfigError
from mlfactory.tracking import flatten, load_run_state

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "best.ckpt"
BUNDLE_DIR = "bundle"
PROFILER_DIR = "profiler"
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
    """Refuse to start a new run over a trained bundle or an interrupted run, unless `force`.

    Raises:
        ConfigError: `out_dir` holds a bundle or an interrupted run, and `force` is not set.
    """
    if force:
        return
    _check_no_bundle(out_dir, "choose another --out, or add --force to replace it")
    if (out_dir / CHECKPOINT_DIR / LAST_CHECKPOINT).is_file():
        raise ConfigError(
            f"{out_dir} holds an interrupted run: add --resume to continue it, or --force to "
            "start over"
        )


def resume_state(out_dir: Path, force: bool = False) -> dict[str, Any]:
    """The stored state of the interrupted (or finished) run in `out_dir`.

    Resuming a finished run trains it longer and replaces its bundle: that needs `force`.

    Raises:
        ConfigError: `out_dir` holds no run to resume (no `run.json` or no last checkpoint),
            or holds its bundle already and `force` is not set.
    """
    state = load_run_state(out_dir)
    last = out_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    if state is None or not last.is_file():
        raise ConfigError(f"--resume: no interrupted run in {out_dir} (no {last})")
    if not force:
        _check_no_bundle(
            out_dir, "--resume would train it longer and replace it: add --force to do so"
        )
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
    """The recipe of the run to resume: its stored overrides, then the new ones, checked.

    Args:
        reference: the recipe name or path given on the command line.
        overrides: overrides given with `--resume`; only `RESUMABLE_KEYS` may change.
        out_dir: the run folder.
        force: resume a finished run too (replacing its bundle).

    Raises:
        ConfigError: no run to resume (see `resume_state`), or the overrides (or an edited
            recipe file) change a key that `--resume` must keep; the message names the keys.
    """
    state = resume_state(out_dir, force)
    stored = list(state.get("overrides", []))
    recipe = load_recipe(reference, [*stored, *overrides])
    changed = changed_keys(state["recipe"], recipe.resolved)
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
    best = Path(best_path) if best_path else None
    if best is not None and best.is_file() and best.name != BEST_CHECKPOINT:
        best.replace(checkpoint_dir / BEST_CHECKPOINT)
    for path in checkpoint_dir.glob("*.ckpt"):
        if path.name not in (BEST_CHECKPOINT, LAST_CHECKPOINT):
            path.unlink()


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Dotted keys whose value differs between two resolved recipes (added or removed too).

    A setting mlfactory gained after the run started is missing from `before`: it counts as
    unchanged while it has its default, which is how every new setting keeps the behaviour
    from before it existed.
    """
    old, new = flatten(before), flatten(after)
    defaults = setting_defaults()
    return sorted(
        key for key in old.keys() | new.keys() if old.get(key, defaults.get(key)) != new.get(key)
    )


def setting_defaults() -> dict[str, Any]:
    """Each setting's default as a dotted key (settings without one hold OmegaConf's "???")."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.to_container(OmegaConf.structured(RecipeConfig))
    assert isinstance(defaults, dict)
    return flatten(defaults)  # type: ignore[arg-type]


def resume_command(recipe: Recipe, out_dir: Path) -> str:
    """The command line that continues an interrupted run."""
    return f"mlfactory train {recipe.reference or recipe.name} --out {out_dir} --resume"
