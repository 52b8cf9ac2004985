"""The commands around the MLflow Model Registry (register, fetch, compare: the decision to
promote) and the offline demo."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from mlfactory.cli.base import TARGET_HELP, VERBOSE, app, console, friendly_errors
from mlfactory.errors import BundleError, ConfigError
from mlfactory.output import configure_output

if TYPE_CHECKING:
    from mlfactory.compare_command import CompareResult


@app.command()
@friendly_errors
def register(
    target: str = typer.Argument(
        ...,
        help="A bundle folder, a run folder or an MLflow run id: registered as a new version; "
        "or a registered version (models:/NAME/VERSION, models:/NAME@ALIAS): --alias moves "
        "to it.",
    ),
    name: str | None = typer.Option(
        None, help="The registered model's name (default: the bundle's name).", show_default=False
    ),
    alias: list[str] = typer.Option(
        [], "--alias", help="Point this alias at the version (repeat it for more), e.g. champion."
    ),
) -> None:
    """Register a trained bundle in the MLflow Model Registry, or move aliases to a version."""
    from mlfactory.mlflow_store import registry_uri, shown_url
    from mlfactory.registry import find_version, is_model_uri, register_bundle, set_aliases
    from mlfactory.targets import resolve_bundle

    configure_output(False)
    if is_model_uri(target):
        if name is not None or not alias:
            find_version(target)  # a malformed or unknown URI says so first
            raise BundleError(
                f"{target} is registered already: give --alias to point aliases at it "
                "(--name names a new registration)"
            )
        version = set_aliases(target, alias)
        verb = "now"
    else:
        version, new = register_bundle(resolve_bundle(target), name, alias)
        verb = "registered as" if new else "already registered as"
    aliases = f" (alias {', '.join(sorted(version.aliases))})" if version.aliases else ""
    console.print(
        f"{verb} {version.uri}{aliases}: the bundle of MLflow run {version.run_id} in "
        f"{shown_url(registry_uri())}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@friendly_errors
def fetch(
    target: str = typer.Argument(..., help=TARGET_HELP),
    out: Path = typer.Option(..., help="The folder to write the bundle to (must not exist)."),
) -> None:
    """Copy the bundle a target names into a folder (e.g. to build a serving image from)."""
    from mlfactory.bundle import copy_bundle
    from mlfactory.predictor import Predictor
    from mlfactory.registry import find_version, is_model_uri
    from mlfactory.targets import resolve_bundle

    configure_output(False)
    if out.exists():
        raise BundleError(f"{out} exists: give --out a new folder")
    if out.is_symlink():  # one that points nowhere: the copy would be renamed onto the link
        raise BundleError(f"--out {out} is a symbolic link (to nothing): give --out a new folder")
    # An alias is looked up once: the version printed is the one fetched, even if it moves.
    version = find_version(target).uri if is_model_uri(target) else None
    bundle = resolve_bundle(version or target)
    Predictor.from_path(bundle.path)  # a truncated or corrupt model fails here, not in serving
    copy_bundle(bundle.path, out)
    what = f"bundle {bundle.meta.name} {bundle.meta.version}"
    if version is not None:
        what = f"{version} ({what})"
    console.print(f"{what} written to {out}", highlight=False, soft_wrap=True)


@app.command()
@friendly_errors
def compare(
    baseline: str = typer.Argument(..., help="The model in use, e.g. models:/NAME@champion."),
    candidate: str = typer.Argument(
        ..., help="The model that may replace it, e.g. models:/NAME@challenger."
    ),
    data: str | None = typer.Option(
        None,
        help="A labelled data source (as data.source takes it) to compare on instead of the "
        "candidate's test split: all of its items that neither bundle trained on.",
        show_default=False,
    ),
    level: float = typer.Option(0.05, help="The level of the verdict (exact McNemar test)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    fail_if_worse: bool = typer.Option(
        False, "--fail-if-worse", help="Exit with code 1 when the candidate is significantly worse."
    ),
    verbose: bool = VERBOSE,
) -> None:
    """Two bundles on the same labelled items: which is right more often, and is it chance."""
    import json

    from mlfactory.compare_command import compare_targets

    configure_output(verbose)
    if not 0 < level < 1:
        raise ConfigError(f"--level {level}: use a number between 0 and 1")
    result = compare_targets(baseline, candidate, data, level)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        _print_comparison(result)
    if fail_if_worse and result.comparison.verdict == "worse":
        raise typer.Exit(1)


def _print_comparison(result: CompareResult) -> None:
    pair = result.comparison
    table = Table("", "model", "accuracy", "macro-F1")
    for role, bundle, registered, accuracy, f1 in (
        (
            "baseline",
            result.baseline,
            result.registered[0],
            pair.baseline_accuracy,
            result.baseline_f1,
        ),
        (
            "candidate",
            result.candidate,
            result.registered[1],
            pair.candidate_accuracy,
            result.candidate_f1,
        ),
    ):
        model = f"{bundle.meta.name} {bundle.meta.version}"
        if registered is not None:  # the version it is in the registry, beside its own
            model = f"{registered} ({model})"
        table.add_row(role, model, f"{accuracy:.4f}", f"{f1:.4f}")
    console.print(table)
    left_out = f", {result.left_out} left out (a bundle trained on them)" if result.left_out else ""
    low, high = pair.difference_ci
    for line in (
        f"on {pair.items} items: {result.source}{left_out}",
        f"only the baseline right on {pair.only_baseline_right}, only the candidate on "
        f"{pair.only_candidate_right}: accuracy {pair.difference:+.4f} "
        f"({100 * (1 - pair.level):g}% interval {low:+.4f} to {high:+.4f})",
        f"the candidate: {pair.verdict.upper()} (exact McNemar test, p = {pair.p_value:.3g}, "
        f"level {pair.level:g})",
    ):
        console.print(line, highlight=False, soft_wrap=True)


@app.command()
@friendly_errors
def demo(
    out: Path = typer.Option(
        Path("mlfactory-demo"),
        help="The demo's folder: its run, bundle, prediction log, data cache and (unless "
        "MLFLOW_TRACKING_URI names one) its MLflow store. A new or empty folder, or an earlier "
        "demo's, which it replaces.",
    ),
    verbose: bool = VERBOSE,
) -> None:
    """The whole loop offline on real data: data, train, evaluate, bundle, serve, predict."""
    configure_output(verbose)
    from mlfactory.demo import run_demo

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_demo(out, console)
