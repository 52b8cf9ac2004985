"""A sweep's Optuna study and its trial folders: the storage it lives in, what it was started
with (metric, fixed overrides, search space), and the `--out` folder that holds its trials.

A study records what it was started with in its user attributes; a later call that would add
trials of another recipe setting or another space to it is refused, as are trial folders of
another study (another name, or the same name in another storage) in `--out`.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from pathlib import Path
from typing import Literal

import optuna

from mlfactory.errors import ConfigError, first_line
from mlfactory.mlflow_store import hide_password, shown_url
from mlfactory.sqlite_stores import foreign_sqlite_problem
from mlfactory.tracking import without_secrets
from mlfactory.training.search_space import SearchSpace
from mlfactory.training.sweep_sampler import TrialSeededSampler

DEFAULT_STORAGE = "sqlite:///optuna.db"
# Tables every Optuna RDB storage has: a SQLite file with other tables and not these is none.
OPTUNA_TABLES = frozenset({"studies", "trials", "version_info"})
# The file in `--out` that names the study whose trial-N folders it holds.
OUT_MARKER = "sweep.json"
SWEEP_ID_ATTR = "sweep_id"
# Another study needs its own folder of trials: `--out` holds one study's.
ANOTHER_OUT = "with a new --out, or none: runs/NAME"
# Each running trial's worker writes a heartbeat this often (seconds); a trial whose worker
# has written none for the grace period (killed, its machine or network gone) is failed by the
# next worker that starts a trial of the study.
HEARTBEAT_INTERVAL_S = 60
HEARTBEAT_GRACE_S = 180
# How long a SQLite study's connection waits for another one's lock (seconds).
SQLITE_BUSY_TIMEOUT_S = 60.0
# Tries at opening a storage whose tables another worker is creating at the same moment.
OPEN_ATTEMPTS = 3


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
    """The study `name` in `storage`, created when it is not there. Its trials draw from
    `seed` and their numbers (`TrialSeededSampler`); a trial whose worker has sent no heartbeat
    for `HEARTBEAT_GRACE_S` (killed, or its machine gone) is failed by the next worker that
    starts a trial.

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
        return optuna.create_study(
            study_name=name,
            storage=_rdb_storage(storage),
            direction=direction,
            sampler=TrialSeededSampler(seed),
            pruner=pruner,
            load_if_exists=True,
        )
    except (SQLAlchemyError, ArgumentError, ValueError, ModuleNotFoundError) as exc:
        problem = hide_password(first_line(exc), storage)
        raise ConfigError(f"--storage {shown_url(storage)} cannot be opened: {problem}") from None


def _rdb_storage(storage: str) -> optuna.storages.RDBStorage:
    """The storage, with heartbeats; opened again after a short, random wait when another
    worker was creating its tables at the same moment (PostgreSQL then refuses one of the two
    `CREATE TABLE`s with a unique violation)."""
    import warnings

    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return HeartbeatFromCreation(
                    storage,
                    engine_kwargs=_engine_kwargs(storage),
                    heartbeat_interval=HEARTBEAT_INTERVAL_S,
                    grace_period=HEARTBEAT_GRACE_S,
                )
        except (IntegrityError, ProgrammingError) as exc:
            creating = isinstance(exc, IntegrityError) or "already exists" in str(exc)
            if not creating or attempt == OPEN_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.2, 1.0))
    raise AssertionError("unreachable")


class HeartbeatFromCreation(optuna.storages.RDBStorage):
    """Optuna's RDB storage, where a new trial has its first heartbeat as it is created.

    `study.ask` creates the trial (RUNNING) and then samples its values, which takes a while
    with many finished trials; the worker's heartbeat thread starts after that. Optuna's check
    of stale trials skips a trial without any heartbeat, so a worker killed outright (SIGKILL,
    the OOM killer, a machine gone) while sampling would leave its trial RUNNING for good. With
    a heartbeat from the start, the next worker fails it once the grace period has passed.

    The private `_create_new_trial` is overridden because it is what Optuna's cache in front of
    the storage (`_CachedStorage.create_new_trial`, which `create_study` puts there) calls; the
    public `create_new_trial` is bypassed by it. Pinned with optuna==5.0.0;
    tests/training/test_sweep_workers.py fails if an upgrade changes that.
    """

    def _create_new_trial(
        self, study_id: int, template_trial: optuna.trial.FrozenTrial | None = None
    ) -> optuna.trial.FrozenTrial:
        trial = super()._create_new_trial(study_id, template_trial)
        if trial.state == optuna.trial.TrialState.RUNNING and self.heartbeat_interval:
            self.record_heartbeat(trial._trial_id)
        return trial


def _engine_kwargs(storage: str) -> dict[str, object]:
    """A SQLite study waits up to `SQLITE_BUSY_TIMEOUT_S` for a lock that another connection
    holds (the worker's heartbeat thread, a second worker, a reader) instead of sqlite3's
    5 s, which a busy machine exceeds ("database is locked")."""
    if storage.startswith("sqlite:"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return {}


def check_study(study: optuna.Study, metric: str, direction: str, space: SearchSpace) -> None:
    """Record what a new study judges trials by, its fixed overrides (without the credentials
    of their URLs: `without_secrets`) and its space; refuse a study started with others (its
    trials would be mixed with this call's), or one that optimizes the other way.

    Raises:
        ConfigError: the study judges trials by another metric or in the other direction, or
            was started with other fixed overrides or another search space.
    """
    attrs = study.user_attrs
    recorded = attrs.get("metric")
    if recorded is not None and recorded != metric:
        raise ConfigError(
            f"the study '{study.study_name}' judges trials by {recorded}, not {metric}: use "
            f"--metric {recorded}, or --study NAME to start another study ({ANOTHER_OUT})"
        )
    its_direction = study.direction.name.lower()
    if its_direction != direction:
        raise ConfigError(
            f"the study '{study.study_name}' was created to {its_direction} its trials' values, "
            f"but {metric} is to be {direction.removesuffix('e')}ed: its best trial would be the "
            f"worst; use --study NAME to start another study ({ANOTHER_OUT})"
        )
    now = {"fixed": without_secrets(space.fixed_settings()), "space": space.describe()}
    differences = [
        f"{what} {change}"
        for what, values in now.items()
        if what in attrs
        for change in _changes(without_secrets(attrs[what]), values)
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
