"""A sweep's Optuna study and its trial folders: the storage it lives in, what it was started
with (metric, fixed overrides, search space), and the `--out` folder that holds its trials.

A study records what it was started with in its user attributes; a later call that would add
trials of another recipe setting or another space to it is refused, as are trial folders of
another study (another name, or the same name in another storage) in `--out`.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Literal

import optuna

from mlfactory.errors import ConfigError, first_line
from mlfactory.mlflow_store import shown_url
from mlfactory.sqlite_stores import foreign_sqlite_problem
from mlfactory.training.search_space import SearchSpace

DEFAULT_STORAGE = "sqlite:///optuna.db"
# Tables every Optuna RDB storage has: a SQLite file with other tables and not these is none.
OPTUNA_TABLES = frozenset({"studies", "trials", "version_info"})
# The file in `--out` that names the study whose trial-N folders it holds.
OUT_MARKER = "sweep.json"
SWEEP_ID_ATTR = "sweep_id"
# Another study needs its own folder of trials: `--out` holds one study's.
ANOTHER_OUT = "with a new --out, or none: runs/NAME"


def storage_url(storage: str) -> str:
    """`--storage` as a SQLAlchemy URL: a path without a scheme (`--storage sweeps.db`, as the
    help says, a SQLite file) is that SQLite file."""
    if "://" in storage or not storage.strip():
        return storage
    return f"sqlite:///{Path(storage).expanduser().resolve()}"


def check_out_path(out_dir: Path) -> None:
    """Refuse an `--out` that is not a folder, before anything is prepared."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder: choose a folder for trials")


def open_study(
    name: str,
    storage: str,
    direction: Literal["minimize", "maximize"],
    pruner: optuna.pruners.BasePruner | None,
    seed: int,
) -> optuna.Study:
    """The study `name` in `storage`, created when it is not there.

    Raises:
        ConfigError: the storage cannot be opened, or is a database of something else.
    """
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    # The sweep reports each trial itself (Optuna would add a traceback for every failed one).
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    pruner = pruner or optuna.pruners.NopPruner()
    problem = foreign_sqlite_problem(storage, OPTUNA_TABLES, "an Optuna storage")
    if problem is not None:
        raise ConfigError(f"--storage {shown_url(storage)} cannot be used: {problem}")
    try:
        rdb = optuna.storages.RDBStorage(storage)
        existing = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(rdb)}
        # A study continued by another call samples on from a seed of its own: the same seed
        # would propose the first call's random start points again.
        sampler = optuna.samplers.TPESampler(seed=seed + existing.get(name, 0))
        return optuna.create_study(
            study_name=name,
            storage=rdb,
            direction=direction,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
    except (SQLAlchemyError, ArgumentError, ValueError, ModuleNotFoundError) as exc:
        problem = first_line(exc)
        raise ConfigError(f"--storage {shown_url(storage)} cannot be opened: {problem}") from None


def check_study(study: optuna.Study, metric: str, space: SearchSpace) -> None:
    """Record what a new study judges trials by, its fixed overrides and its space; refuse a
    study started with others (its trials would be mixed with this call's).

    Raises:
        ConfigError: the study judges trials by another metric, or was started with other
            fixed overrides or another search space.
    """
    attrs = study.user_attrs
    recorded = attrs.get("metric")
    if recorded is not None and recorded != metric:
        raise ConfigError(
            f"the study '{study.study_name}' judges trials by {recorded}, not {metric}: use "
            f"--metric {recorded}, or --study NAME to start another study ({ANOTHER_OUT})"
        )
    now = {"fixed": _as_dict(space.fixed), "space": space.describe()}
    differences = [
        f"{what} {change}"
        for what, values in now.items()
        if what in attrs
        for change in _changes(attrs[what], values)
    ]
    if differences:
        raise ConfigError(
            f"the study '{study.study_name}' was started with other settings "
            f"({'; '.join(differences)}): its trials would be mixed with these; run it with "
            f"its own, or use --study NAME to start another study ({ANOTHER_OUT})"
        )
    for key, value in {"metric": metric, **now}.items():
        if key not in attrs:
            study.set_user_attr(key, value)


def _as_dict(overrides: list[str]) -> dict[str, str]:
    return {key: value for key, _, value in (o.partition("=") for o in overrides)}


def _changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """`key=new (was old)` for each key whose value differs, `(none)` where one has none."""
    return [
        f"{key}={new.get(key, '(none)')} (was {old.get(key, '(none)')})"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def claim_out(study: optuna.Study, storage: str, out_dir: Path) -> None:
    """Make `out_dir` the study's folder of trials, or refuse one that holds another study's:
    its trial-N folders would be replaced by this study's trials of the same numbers.

    Raises:
        ConfigError: `out_dir` holds trial folders of another study (or of a sweep that did
            not name its study).
    """
    sweep_id = study.user_attrs.get(SWEEP_ID_ATTR)
    if sweep_id is None:
        sweep_id = uuid.uuid4().hex
        study.set_user_attr(SWEEP_ID_ATTR, sweep_id)
    marker = out_dir / OUT_MARKER
    try:
        owner = json.loads(marker.read_text())
    except FileNotFoundError:
        owner = None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--out {out_dir}: {marker} cannot be read: {first_line(exc)}") from None
    if owner is not None and owner.get(SWEEP_ID_ATTR) == sweep_id:
        return
    held = owner is not None or any(out_dir.glob("trial-*"))
    if held:
        whose = (
            f"the study '{owner.get('study')}' ({owner.get('storage')})"
            if isinstance(owner, dict)
            else "another sweep"
        )
        raise ConfigError(
            f"--out {out_dir} holds the trials of {whose}: this study's trials would replace "
            "them; choose another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    made = {"study": study.study_name, "storage": shown_url(storage), SWEEP_ID_ATTR: sweep_id}
    partial = out_dir / f".{OUT_MARKER}.{os.getpid()}.tmp"
    partial.write_text(json.dumps(made, indent=2) + "\n")
    partial.replace(marker)
