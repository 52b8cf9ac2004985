"""The `mlfactory` command: one thin sub-command per stage.

Each command parses its arguments, composes the recipe and calls one function. Errors a user can
cause are printed as one line (`error: ...`) with exit code 2, never as a traceback. Recipes
are checked before torch is imported, so a typo costs about a second. Output is one line per
phase; `-v` shows every log line and warning (`mlfactory.output`).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mlfactory import __version__
from mlfactory.errors import BundleError, ConfigError, Interrupted, MlfactoryError
from mlfactory.output import configure_output

app = typer.Typer(
    name="mlfactory",
    help="From raw data to a served, monitored classification model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Printed strings are text, not rich markup: file names, labels and messages keep their brackets
# (`mlfactory[train]`, `dvc:PATH[@REV]`, a folder named `[draft]`).
console = Console(soft_wrap=True, markup=False)
err_console = Console(stderr=True, soft_wrap=True, markup=False)
F = TypeVar("F", bound=Callable[..., Any])

OVERRIDES = typer.Argument(
    None, help="Config overrides, e.g. trainer.max_epochs=3", show_default=False
)
VERBOSE = typer.Option(False, "--verbose", "-v", help="Show every log line and warning.")
SHOW_CONFIG = typer.Option(False, "--show-config", help="Print the resolved recipe and exit.")
TARGET_HELP = (
    "A bundle folder, a run folder (holding bundle/), an MLflow run id or a registered model "
    "(models:/NAME/VERSION, models:/NAME@ALIAS)."
)
LOG_HELP = (
    "The prediction log: an SQLAlchemy URL or a SQLite file; default MLFACTORY_LOG_URL, then "
    "sqlite:///predictions.db (the server's default)."
)
SKIPS_LISTED = 20


def error_line(message: str) -> Text:
    """`error: <message>`, the prefix in red."""
    return Text.assemble(("error:", "red"), " ", message)


def friendly_errors(func: F) -> F:
    """Turn user-caused errors into one line on stderr and exit code 2 (130 on Ctrl-C)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Interrupted as exc:
            err_console.print(str(exc), highlight=False)
            raise typer.Exit(code=130) from None
        except MlfactoryError as exc:
            err_console.print(error_line(str(exc)), highlight=False)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        print(f"mlfactory {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """From raw data to a served, monitored classification model."""


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
    recipe: str = typer.Argument(..., help="Recipe name or YAML path."),
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
    table = Table("split", *dataset.labels, "total")
    for split, row in dataset.counts().items():
        counts = [row.get(label, 0) for label in dataset.labels]
        table.add_row(split, *map(str, counts), str(sum(counts)))
    console.print(table)
    console.print(f"fingerprint {dataset.fingerprint}; skipped {len(dataset.skipped)} item(s)")
    if dataset.version:
        console.print(f"version {dataset.version}", highlight=False, soft_wrap=True)
    for line in describe_limits(dataset):
        console.print(line, highlight=False)
    for line in dataset.warnings:
        console.print(f"warning: {line}", highlight=False)
    for skipped in dataset.skipped[:SKIPS_LISTED]:
        console.print(f"  skipped {skipped['path']}: {skipped['reason']}", highlight=False)
    if len(dataset.skipped) > SKIPS_LISTED:
        where = cache_path(loaded.config)
        more = len(dataset.skipped) - SKIPS_LISTED
        console.print(f"  ... and {more} more, all listed in {where}", highlight=False)


@app.command()
@friendly_errors
def train(
    recipe: str = typer.Argument(..., help="Recipe name or YAML path."),
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
    from mlfactory.training.launcher import check_launched
    from mlfactory.training.run_folder import check_new_run, resume_recipe

    configure_output(verbose)
    # Recipe and run-folder errors come before torch is imported: about a second.
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
    if note and os.environ.get("LOCAL_RANK", "0") == os.environ.get("RANK", "0") == "0":
        err_console.print(note, highlight=False)  # once: DDP's other ranks run this command too
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
    recipe: str = typer.Argument(..., help="Recipe name or YAML path."),
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
    study: str | None = typer.Option(None, help="Study name [default: <recipe name>-sweep]."),
    storage: str = typer.Option(
        "sqlite:///optuna.db",
        envvar="MLFACTORY_SWEEP_STORAGE",
        help="Optuna storage: a SQLite file, or PostgreSQL shared by several workers.",
    ),
    out: Path | None = typer.Option(None, help="Trial folders go to OUT/trial-N [runs/<study>]."),
    prune: bool = typer.Option(True, help="Stop trials behind the median at the same epoch."),
    timeout: float | None = typer.Option(
        None, min=1, help="Start no trial after this many seconds."
    ),
    verbose: bool = VERBOSE,
) -> None:
    """Search hyperparameters with Optuna; the last line printed is the best bundle's path."""
    from mlfactory.training.search_space import parse_search_space

    configure_output(verbose)
    space = parse_search_space(list(overrides or []))  # before torch is imported
    from mlfactory.sweep_command import trials_table
    from mlfactory.training.sweep import run_sweep

    result = run_sweep(recipe, space, trials, out, storage, study, metric, prune, timeout)
    err_console.print(trials_table(result))
    best = result.best
    if best is None or best.bundle is None:
        raise ConfigError(f"no trial of the study '{result.study}' finished: see the table for why")
    err_console.print(
        f"best: trial {best.number}, {result.metric} {best.value:.4f}, MLflow run {best.run_id} "
        f"(the sweep's run: {result.parent_run_id}); register it with: "
        f"mlfactory register {best.bundle}",
        highlight=False,
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
    metrics = evaluate_target(target)
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
    verbose: bool = VERBOSE,
) -> None:
    """Write the bundle's monitoring profile again from its recipe's data (no training)."""
    from mlfactory.profile_command import profile_target

    configure_output(verbose)
    result = profile_target(target, data)
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
        0.01, min=0.0, max=1.0, help="Refuse the int8 bundle if it loses more test accuracy."
    ),
    force: bool = typer.Option(False, help="Replace what OUT holds."),
    verbose: bool = VERBOSE,
) -> None:
    """Write an int8 twin of a bundle (ONNX Runtime static quantization), checked on its
    test split; the last line printed is its path."""
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


@app.command()
@friendly_errors
def predict(
    target: str = typer.Argument(..., help=TARGET_HELP),
    inputs: list[str] | None = typer.Argument(
        None,
        help="Files, folders (recursive), .csv/.tsv/.jsonl tables for text bundles, "
        "or - for stdin (text bundles: one text per line).",
        show_default=False,
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write results to a .csv or .jsonl file (streamed)."
    ),
    text: list[str] | None = typer.Option(
        None, "--text", help="A text to classify (text bundles; repeat for more)."
    ),
    text_column: str = typer.Option("text", help="The column of a table that holds the text."),
    batch_size: int = typer.Option(32, min=1, help="Inputs per model call."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Classify inputs in-process with ONNX Runtime (exit code 1 if any input was skipped)."""
    from mlfactory.batch_predict import iter_inputs, plan_inputs, predict_stream
    from mlfactory.batch_results import (
        TerminalResults,
        open_results,
        skip_reporter,
        summary_line,
        write_results,
    )
    from mlfactory.predictor import Predictor
    from mlfactory.targets import resolve_bundle

    configure_output(False)
    bundle = resolve_bundle(target)
    plan = plan_inputs(list(inputs or []), bundle.modality, list(text or []), text_column)
    predictor = Predictor.from_path(bundle.path)  # test-runs the model: a corrupt one fails here
    writer = (
        open_results(output, bundle.meta.labels)
        if output is not None
        else TerminalResults(console, as_json)
    )
    results = predict_stream(predictor, iter_inputs(plan), batch_size)
    summary = write_results(
        results, writer, plan.count, sys.stderr.isatty(), skip_reporter(err_console)
    )
    if output is not None or summary.skipped or plan.ignored:
        ignored = f"; ignored {plan.ignored} file(s) of other kinds" if plan.ignored else ""
        err_console.print(summary_line(summary, output) + ignored, highlight=False)
    if summary.skipped:
        raise typer.Exit(code=1)


@app.command()
@friendly_errors
def serve(
    target: str = typer.Argument(..., help=TARGET_HELP),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int | None = typer.Option(
        None, help="Worker processes (uvicorn); default MLFACTORY_WORKERS or 1."
    ),
) -> None:
    """Serve a bundle over HTTP (FastAPI + ONNX Runtime; torch is never imported)."""
    from mlfactory.serving.run import run_server
    from mlfactory.targets import resolve_bundle

    run_server(resolve_bundle(target).path, host=host, port=port, workers=workers)


@app.command()
@friendly_errors
def monitor(
    target: str = typer.Argument(..., help=TARGET_HELP),
    log: str | None = typer.Option(None, help=LOG_HELP, show_default=False),
    last: int | None = typer.Option(
        None,
        help="Check the last N predictions (default 1000; with --since, of that period's, "
        "default 100000; at most 100000).",
        show_default=False,
    ),
    since: str | None = typer.Option(
        None, help="Check the predictions of the last TIME: 30m, 6h, 2d, 1w.", metavar="TIME"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON report instead."),
    html: Path | None = typer.Option(None, help="Also write a self-contained HTML report here."),
    level: float | None = typer.Option(
        None,
        help="False-alarm level of the drift verdict (default MLFACTORY_MONITOR_LEVEL, the "
        "server's, then 0.05).",
        show_default=False,
    ),
    flagged: int | None = typer.Option(
        None,
        help="List at most N of the most out-of-distribution inputs, by request id and "
        "position (default 10, at most 1000; the table shows 3).",
        metavar="N",
        show_default=False,
    ),
    fail_on_drift: bool = typer.Option(
        False,
        "--fail-on-drift",
        help="Exit with code 1 when the verdict is drift (for cron jobs and CI).",
    ),
) -> None:
    """Check a window of the bundle's logged predictions for drift, OOD inputs and accuracy."""
    import json

    from mlfactory.monitor_command import monitor_bundle, report_renderable, write_html

    result = monitor_bundle(target, log, last, since, level, flagged)
    if html is not None:
        write_html(result, html)
    if as_json:
        print(json.dumps(result.report.to_json(), indent=2))
    else:
        console.print(report_renderable(result.report), highlight=False)
        if html is not None:
            console.print(f"HTML report: {html}", highlight=False, soft_wrap=True)
    if fail_on_drift and result.report.drift:
        raise typer.Exit(code=1)


@app.command()
@friendly_errors
def collect(
    target: str = typer.Argument(..., help=TARGET_HELP),
    out: Path = typer.Option(..., help="A new (or empty) folder to write the dataset into."),
    inputs: str | None = typer.Option(
        None,
        help="The server's input store; default MLFACTORY_INPUT_STORE.",
        show_default=False,
    ),
    log: str | None = typer.Option(None, help=LOG_HELP, show_default=False),
    since: str | None = typer.Option(
        None, help="Only labels sent within the last TIME: 30d, 2w.", metavar="TIME"
    ),
) -> None:
    """Write the inputs users labelled (POST /v1/feedback) as a dataset to retrain on."""
    from mlfactory.collect_command import collect_labelled

    result = collect_labelled(target, out, inputs, log, since)
    counts = ", ".join(f"{label} {n}" for label, n in sorted(result.per_label.items()))
    line = f"{result.written} labelled inputs of '{result.model}' written to {result.out}"
    notes = [f"({counts})"] if counts else []
    if result.relabelled:
        notes.append(f"{result.relabelled} relabelled: the latest label kept")
    if result.missing:
        notes.append(f"{result.missing} no longer in the store (not kept, or past retention)")
    if result.damaged:
        notes.append(
            f"{result.damaged} damaged in the store (their bytes no longer hash to their name): "
            "left out"
        )
    console.print(" ".join([line, *notes]), highlight=False, soft_wrap=True)
    if result.written:
        console.print(
            f"train on them: mlfactory train RECIPE data.source={result.out}", highlight=False
        )


@app.command()
@friendly_errors
def ui(
    api: str = typer.Option(..., help="The mlfactory server, e.g. http://127.0.0.1:8000."),
    host: str = typer.Option("127.0.0.1", help="Interface the UI binds."),
    port: int = typer.Option(8501, help="TCP port of the UI."),
) -> None:
    """The web UI (Streamlit, `ui` extra): predict, model card, monitoring; HTTP only."""
    from mlfactory.ui.launch import run_ui

    code = run_ui(api, host, port)
    if code:
        raise typer.Exit(code=code)


@app.command()
@friendly_errors
def report(
    target: str = typer.Argument(..., help=TARGET_HELP),
    out: Path = typer.Option(Path("card.html"), help="The HTML file to write."),
    log: str | None = typer.Option(
        None,
        help="A prediction log, an SQLAlchemy URL or a SQLite file (e.g. predictions.db): "
        "adds monitoring.",
    ),
    last: int | None = typer.Option(None, min=1, help="With --log: the last N predictions."),
) -> None:
    """The model card as one self-contained HTML page (opens offline); monitoring with --log."""
    from mlfactory.card_report import write_report
    from mlfactory.targets import resolve_bundle

    path = write_report(resolve_bundle(target).path, out, log, last)
    console.print(f"model card written to {path}", highlight=False)


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
    from mlfactory.registry import is_model_uri, register_bundle, set_aliases, tracking_uri
    from mlfactory.targets import resolve_bundle

    configure_output(False)
    if is_model_uri(target):
        if name is not None or not alias:
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
        f"{tracking_uri()}",
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
    import shutil

    from mlfactory.registry import find_version, is_model_uri
    from mlfactory.targets import resolve_bundle

    configure_output(False)
    if out.exists():
        raise BundleError(f"{out} exists: give --out a new folder")
    bundle = resolve_bundle(target)
    try:
        shutil.copytree(bundle.path, out)
    except OSError as exc:
        raise BundleError(f"cannot write {out}: {exc.strerror or exc}") from None
    what = f"bundle {bundle.meta.name} {bundle.meta.version}"
    if is_model_uri(target):
        what = f"{find_version(target).uri} ({what})"
    console.print(f"{what} written to {out}", highlight=False, soft_wrap=True)


@app.command()
@friendly_errors
def demo(
    out: Path = typer.Option(Path("mlfactory-demo"), help="Where the run and bundle go."),
    verbose: bool = VERBOSE,
) -> None:
    """The whole loop offline on real data: data, train, evaluate, bundle, serve, predict."""
    configure_output(verbose)
    from mlfactory.demo import run_demo

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_demo(out, console)


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


def main(args: list[str] | None = None) -> None:
    """The `mlfactory` command: the app, with command-line mistakes (an unknown command or
    option, a value of the wrong type, a missing argument) as one `error:` line and exit code
    2, as every other wrong input is, instead of the usage box typer draws.

    Args:
        args: the arguments (default: the process's).
    """
    # typer vendors click; its exceptions are not re-exported
    from typer._click.exceptions import NoArgsIsHelpError, UsageError

    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="mlfactory", standalone_mode=False)
    except NoArgsIsHelpError:  # `mlfactory` alone: the help is printed
        raise SystemExit(2) from None
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "mlfactory"
        message = exc.format_message().rstrip(".")
        err_console.print(error_line(f"{message} (see {where} --help)"), highlight=False)
        raise SystemExit(2) from None
    except typer.Abort:  # Ctrl-C at a prompt
        err_console.print("interrupted")
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
