"""The commands that make a model: recipes, data, train, sweep, evaluate, profile, quantize.

Recipes are checked before torch is imported, so a typo costs about a second: torch and the
training code are imported inside the commands, after the recipe is loaded.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.measure import Measurement
from rich.table import Table

from mlfactory.cli.base import (
    OVERRIDES,
    SHOW_CONFIG,
    TARGET_HELP,
    VERBOSE,
    app,
    console,
    err_console,
    friendly_errors,
    number_from,
)
from mlfactory.errors import ConfigError
from mlfactory.output import configure_output

SKIPS_LISTED = 20
RECIPE_HELP = (
    "Recipe name, YAML path, or a bundle whose recipe to train again (bundle or run folder, "
    "MLflow run id, models:/NAME@ALIAS)."
)


@app.command()
@friendly_errors
def recipes() -> None:
    """List the packaged recipes with their modality, model and default data."""
    from mlfactory.config.loader import describe_recipes

    table = Table("recipe", "modality", "model", "default data")
    descriptions = []
    for name, info in describe_recipes().items():
        table.add_row(name, info["modality"], info["backbone"], info["source"])
        descriptions.append(f"{name}: {info['description']}")
    console.print(table)
    for line in descriptions:
        console.print(line, highlight=False)


@app.command()
@friendly_errors
def data(
    recipe: str = typer.Argument(..., help=RECIPE_HELP),
    overrides: list[str] | None = OVERRIDES,
    refresh: bool = typer.Option(False, help="Re-read the source even if a cache exists."),
    show_config: bool = SHOW_CONFIG,
    verbose: bool = VERBOSE,
) -> None:
    """Fetch, validate, split and cache the recipe's dataset."""
    from mlfactory.config.loader import load_recipe

    configure_output(verbose)
    loaded = load_recipe(recipe, overrides)
    if show_config:
        print(_yaml(loaded.resolved), end="")
        return
    from mlfactory.data.prepare import cache_path, describe_limits, prepare_dataset

    dataset = prepare_dataset(loaded.config, refresh=refresh)
    console.print(_counts_table(dataset.counts(), dataset.labels))
    console.print(f"fingerprint {dataset.fingerprint}; skipped {len(dataset.skipped)} item(s)")
    if dataset.version:
        console.print(f"version {dataset.version}", highlight=False, soft_wrap=True)
    for line in describe_limits(dataset):
        console.print(line, highlight=False)
    for line in dataset.warnings[:SKIPS_LISTED]:
        console.print(f"warning: {line}", highlight=False)
    if len(dataset.warnings) > SKIPS_LISTED:
        console.print(f"warning: ... and {len(dataset.warnings) - SKIPS_LISTED} more classes")
    for skipped in dataset.skipped[:SKIPS_LISTED]:
        console.print(f"  skipped {skipped['path']}: {skipped['reason']}", highlight=False)
    if len(dataset.skipped) > SKIPS_LISTED:
        where = cache_path(loaded.config)
        more = len(dataset.skipped) - SKIPS_LISTED
        console.print(f"  ... and {more} more, all listed in {where}", highlight=False)


def _counts_table(counts: dict[str, dict[str, int]], labels: list[str]) -> Table:
    """Items per split (a row each) and label (a column each); one row per label instead when
    the labels' columns would not fit the terminal (20 newsgroups: every cell would be "…")."""
    by_split = Table("split", *labels, "total")
    for split, row in counts.items():
        numbers = [row.get(label, 0) for label in labels]
        by_split.add_row(split, *map(str, numbers), str(sum(numbers)))
    unbounded = console.options.update_width(10_000)  # its natural width, not the clamped one
    if Measurement.get(console, unbounded, by_split).maximum <= console.width:
        return by_split
    by_label = Table("label", *counts, "total")
    for label in labels:
        numbers = [row.get(label, 0) for row in counts.values()]
        by_label.add_row(label, *map(str, numbers), str(sum(numbers)))
    totals = [sum(row.values()) for row in counts.values()]
    by_label.add_section()
    by_label.add_row("total", *map(str, totals), str(sum(totals)))
    return by_label


@app.command()
@friendly_errors
def train(
    recipe: str = typer.Argument(..., help=RECIPE_HELP),
    overrides: list[str] | None = OVERRIDES,
    out: Path | None = typer.Option(None, help="Run folder; the bundle goes to OUT/bundle."),
    resume: bool = typer.Option(
        False, help="Continue the run in OUT with its stored overrides (see docs/cli.md)."
    ),
    force: bool = typer.Option(False, help="Replace a bundle or an interrupted run in OUT."),
    keep_checkpoints: bool = typer.Option(
        False, help="Keep every checkpoint (default: only best.ckpt and last.ckpt)."
    ),
    show_config: bool = SHOW_CONFIG,
    verbose: bool = VERBOSE,
) -> None:
    """Train a recipe; the last line printed is the bundle's path."""
    from mlfactory.config.loader import load_recipe, seed_recipe_note
    from mlfactory.training.launcher import check_launched, owns_the_run
    from mlfactory.training.run_folder import check_new_run, resume_recipe

    configure_output(verbose)
    # Recipe, run-folder and data errors come before torch is imported: about a second.
    if resume:
        out_dir = out or _default_run_folder(recipe, overrides)
        loaded = resume_recipe(recipe, list(overrides or []), out_dir, force)
    else:
        loaded = load_recipe(recipe, overrides)
        out_dir = out or Path("runs") / loaded.name
    if show_config:
        print(_yaml(loaded.resolved), end="")
        return
    note = None if resume else seed_recipe_note(loaded)  # a resumed run said it when it started
    if not resume:
        check_new_run(out_dir, force)
    check_launched(loaded.config.trainer.num_nodes)
    owner = owns_the_run()
    if note and owner:
        err_console.print(note, highlight=False)  # once: DDP's other ranks run this command too
    # The tracking store's and the data's errors too come before the training stack is
    # imported (13 s on 2 cores): the run then reads the prepared dataset from its cache.
    from mlfactory.data.prepare import prepare_dataset
    from mlfactory.mlflow_store import check_tracking_store
    from mlfactory.training.preflight import check_splits

    check_tracking_store(loaded.config.tracking, owner)
    check_splits(prepare_dataset(loaded.config), loaded.config.data)
    from mlfactory.training.train import is_global_zero
    from mlfactory.training.train import train as run_training

    result = run_training(
        loaded,
        out_dir,
        resume=resume,
        progress=sys.stderr.isatty(),
        force=force,
        keep_checkpoints=keep_checkpoints,
    )
    if not is_global_zero() or result.bundle is None:
        return  # under DDP, rank 0 reports the run
    meta = result.bundle.meta
    err_console.print(
        f"done in {result.seconds:.0f} s: '{meta.name}' version {meta.version}, "
        f"MLflow run {result.mlflow_run_id}",
        highlight=False,
    )
    print(result.bundle.path.resolve())


@app.command()
@friendly_errors
def sweep(
    recipe: str = typer.Argument(..., help=RECIPE_HELP),
    overrides: list[str] | None = typer.Argument(
        None,
        help="Fixed overrides, and the swept ones in Hydra's sweep syntax: "
        "trainer.lr=tag(log,interval(1e-4,1e-2)) trainer.batch_size=choice(16,32).",
        show_default=False,
    ),
    trials: int = typer.Option(10, min=1, help="Trials to run now (added to the study)."),
    metric: str = typer.Option(
        "val/loss", help="What a trial is judged by: val/loss, val/acc or val/f1_macro."
    ),
    study: str | None = typer.Option(None, help="Study name (default: <recipe name>-sweep)."),
    storage: str = typer.Option(
        "sqlite:///optuna.db",
        envvar="MLFACTORY_SWEEP_STORAGE",
        help="Optuna storage: a SQLite file, or PostgreSQL shared by several workers.",
    ),
    out: Path | None = typer.Option(
        None, help="Trial folders go to OUT/trial-N (default: runs/<study>)."
    ),
    prune: bool = typer.Option(True, help="Stop trials behind the median at the same epoch."),
    timeout: float | None = typer.Option(
        None, callback=number_from(1), help="Start no trial after this many seconds (at least 1)."
    ),
    verbose: bool = VERBOSE,
) -> None:
    """Search hyperparameters with Optuna; the last line printed is the best bundle's path."""
    from mlfactory.training.search_space import parse_search_space

    configure_output(verbose)
    space = parse_search_space(list(overrides or []))  # before torch is imported
    from mlfactory.sweep_command import register_hint, trials_table
    from mlfactory.training.sweep import run_sweep

    # SIGTERM: `Terminated`, one line and exit code 143 (the running trial failed, the study kept)
    result = run_sweep(recipe, space, trials, out, storage, study, metric, prune, timeout)
    err_console.print(trials_table(result, err_console.width))
    best = result.best
    if best is None or best.bundle is None:
        raise ConfigError(f"no trial of the study '{result.study}' finished: see the table for why")
    err_console.print(
        f"best: trial {best.number}, {result.metric} {best.value:.4f}, MLflow run {best.run_id} "
        f"(the sweep's run: {result.parent_run_id}); register it with: {register_hint(result)}",
        highlight=False,
        soft_wrap=True,
    )
    print(best.bundle)


@app.command()
@friendly_errors
def evaluate(
    target: str = typer.Argument(..., help=TARGET_HELP),
    verbose: bool = VERBOSE,
) -> None:
    """Evaluate a bundle on its recipe's test split; metrics go into bundle.json and MLflow."""
    from mlfactory.evaluate_command import evaluate_target

    configure_output(verbose)
    metrics = evaluate_target(
        target, lambda line: err_console.print(f"warning: {line}", highlight=False)
    )
    table = Table("label", "precision", "recall", "f1", "support")
    for label, row in metrics["per_class"].items():
        table.add_row(
            label,
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
            str(row["support"]),
        )
    console.print(table)
    console.print(f"accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['f1_macro']:.4f}")
    if metrics.get("unsupported_labels"):
        console.print(
            f"no test item of {', '.join(metrics['unsupported_labels'])}: left out of macro-F1",
            highlight=False,
        )


@app.command()
@friendly_errors
def profile(
    target: str = typer.Argument(..., help=TARGET_HELP),
    data: str | None = typer.Option(
        None,
        help="A labelled data source (as data.source takes it) to be the reference instead of "
        "the recipe's validation split: all of its items the bundle did not train on.",
        show_default=False,
    ),
    with_test: bool = typer.Option(
        False,
        "--with-test",
        help="Build the reference from the recipe's validation and test splits together "
        "(twice the inputs; the test split is then part of the profile).",
    ),
    verbose: bool = VERBOSE,
) -> None:
    """Write the bundle's monitoring profile again from its recipe's data (no training)."""
    from mlfactory.profile_command import profile_target

    configure_output(verbose)
    result = profile_target(target, data, with_test)
    meta, profile = result.bundle.meta, result.profile
    where = f"{result.bundle.path}"
    if result.mlflow_run_id and Path(target).expanduser().exists():
        where += f", logged to MLflow run {result.mlflow_run_id}"
    elif result.mlflow_run_id:  # a run id's bundle, downloaded to a temporary folder
        where = f"the bundle of MLflow run {result.mlflow_run_id}"
    console.print(
        f"{meta.name} {meta.version}: new monitoring profile in {where} (OOD threshold "
        f"{profile.ood.threshold:.4g}); a server reads it when it reloads the bundle",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@friendly_errors
def quantize(
    target: str = typer.Argument(..., help=TARGET_HELP),
    out: Path = typer.Option(..., help="Folder of the int8 bundle (a new folder)."),
    float_convs: int = typer.Option(
        3, min=0, help="Keep the first N convolutions in float (the stem costs accuracy)."
    ),
    max_drop: float = typer.Option(
        0.01,
        callback=number_from(0.0, 1.0),
        help="Refuse the int8 bundle if it loses more test accuracy (0 to 1).",
    ),
    force: bool = typer.Option(False, help="Replace what OUT holds."),
    verbose: bool = VERBOSE,
) -> None:
    """Write an int8 twin of a bundle, checked on its test split; the last line printed is its path.

    ONNX Runtime's quantization: static for convolutional networks (calibrated on the
    bundle's training items), dynamic for transformers (text).
    """
    from mlfactory.quantization import quantize_target

    configure_output(verbose)
    result = quantize_target(target, out, float_convs, max_drop, force)
    tracked = f", MLflow run {result.mlflow_run_id}" if result.mlflow_run_id else ""
    err_console.print(
        f"int8 '{result.bundle.meta.name}' version {result.bundle.meta.version}{tracked}: test "
        f"accuracy {result.int8_accuracy:.4f} (float {result.float_accuracy:.4f}); model "
        f"{result.size_ratio:.1f}x smaller, {result.speed_ratio:.2f}x the float model's items "
        "per second here (batches of 16)",
        highlight=False,
    )
    print(result.bundle.path.resolve())


def _default_run_folder(recipe: str, overrides: list[str] | None) -> Path:
    """`runs/<name>` of a run to resume without `--out` (the name may need the data source)."""
    from mlfactory.config.loader import load_recipe

    try:
        return Path("runs") / load_recipe(recipe, overrides).name
    except ConfigError:
        message = "--resume: name the run folder with --out (e.g. --out runs/animals)"
        raise ConfigError(message) from None


def _yaml(resolved: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(resolved, sort_keys=False)
