"""The `mlfactory` command: one thin sub-command per stage.

Each command parses its arguments, composes the recipe and calls one function. Errors a user can
cause are printed as one line (`error: ...`) with exit code 2, never as a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from mlfactory.errors import MlfactoryError

app = typer.Typer(
    name="mlfactory",
    help="From raw data to a served, monitored classification model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

OVERRIDES = typer.Argument(
    None, help="Config overrides, e.g. trainer.max_epochs=3", show_default=False
)


def friendly_errors(func: F) -> F:
    """Turn user-caused errors into one line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MlfactoryError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
@friendly_errors
def recipes() -> None:
    """List the packaged recipes with their modality, model and default data."""
    from mlfactory.config.loader import list_recipes, load_recipe

    table = Table("recipe", "modality", "model", "default data")
    descriptions = []
    for name in list_recipes():
        config = load_recipe(name).config
        table.add_row(name, config.modality, config.model.backbone, config.data.source)
        descriptions.append(f"{name}: {config.description}")
    console.print(table)
    for line in descriptions:
        console.print(line, highlight=False)


@app.command()
@friendly_errors
def data(
    recipe: str = typer.Argument(..., help="Recipe name or YAML path."),
    overrides: list[str] | None = OVERRIDES,
    refresh: bool = typer.Option(False, help="Re-read the source even if a cache exists."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Fetch, validate, split and cache the recipe's dataset."""
    from mlfactory.config.loader import load_recipe
    from mlfactory.data.prepare import prepare_dataset

    _setup_logging(verbose)
    dataset = prepare_dataset(load_recipe(recipe, overrides).config, refresh=refresh)
    table = Table("split", *dataset.labels, "total")
    for split, row in dataset.counts().items():
        counts = [row.get(label, 0) for label in dataset.labels]
        table.add_row(split, *map(str, counts), str(sum(counts)))
    console.print(table)
    console.print(f"fingerprint {dataset.fingerprint}; skipped {len(dataset.skipped)} file(s)")
    for skipped in dataset.skipped[:20]:
        console.print(
            f"  skipped {skipped['path']}: {skipped['reason']}", highlight=False, soft_wrap=True
        )


@app.command()
@friendly_errors
def train(
    recipe: str = typer.Argument(..., help="Recipe name or YAML path."),
    overrides: list[str] | None = OVERRIDES,
    out: Path | None = typer.Option(None, help="Run folder; the bundle goes to OUT/bundle."),
    resume: bool = typer.Option(False, help="Continue an interrupted run in OUT."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train a recipe; the last line printed is the bundle's path."""
    from mlfactory.config.loader import load_recipe

    _setup_logging(verbose)
    loaded = load_recipe(recipe, overrides)  # recipe errors come before torch is imported
    from mlfactory.training.train import is_global_zero
    from mlfactory.training.train import train as run_training

    out_dir = out or Path("runs") / loaded.name
    result = run_training(loaded, out_dir, resume=resume, progress=sys.stderr.isatty())
    if not is_global_zero():
        return  # under DDP, rank 0 reports the run
    test = result.metrics
    console.print(
        f"test accuracy {test['accuracy']:.4f}, macro-F1 {test['f1_macro']:.4f} "
        f"on {test['split_size']} items; {result.seconds:.0f} s; MLflow run {result.mlflow_run_id}"
    )
    print(result.bundle.path.resolve())


@app.command()
@friendly_errors
def evaluate(
    target: str = typer.Argument(..., help="A bundle folder, a run folder or an MLflow run id."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Evaluate a bundle on its recipe's test split; metrics go into bundle.json and MLflow."""
    from mlfactory.evaluate_command import evaluate_target

    _setup_logging(verbose)
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


@app.command()
@friendly_errors
def predict(
    bundle: Path = typer.Argument(..., help="Bundle folder."),
    files: list[Path] = typer.Argument(..., help="Input files (images, audio, or .txt for text)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Classify files with a bundle, in-process with ONNX Runtime."""
    from mlfactory.errors import InputError
    from mlfactory.predictor import Predictor

    predictor = Predictor.from_path(bundle)
    raws = []
    for path in files:
        if not path.is_file():
            raise InputError(f"no such file: {path}")
        raws.append(path.read_bytes())
    try:
        predictions = predictor.predict(raws)
    except InputError as exc:
        raise InputError(f"{exc} (one of: {', '.join(map(str, files))})") from None
    if as_json:
        payload = [
            {"file": str(p), **pred.to_json()} for p, pred in zip(files, predictions, strict=True)
        ]
        print(json.dumps(payload, indent=2))
        return
    table = Table("file", "label", "score")
    for path, prediction in zip(files, predictions, strict=True):
        table.add_row(str(path), prediction.label, f"{prediction.score:.4f}")
    console.print(table)


@app.command()
@friendly_errors
def serve(
    bundle: Path = typer.Argument(..., help="Bundle folder."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int | None = typer.Option(
        None, help="Worker processes (uvicorn); default MLFACTORY_WORKERS or 1."
    ),
) -> None:
    """Serve a bundle over HTTP (FastAPI + ONNX Runtime; torch is never imported)."""
    from mlfactory.serving.run import run_server

    run_server(bundle, host=host, port=port, workers=workers)


@app.command()
@friendly_errors
def demo(
    out: Path = typer.Option(Path("mlfactory-demo"), help="Where the run and bundle go."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """The whole loop offline on real data: data, train, evaluate, bundle, serve, predict."""
    from mlfactory.demo import run_demo

    _setup_logging(verbose)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_demo(out, console)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
