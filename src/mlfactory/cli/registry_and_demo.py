"""The commands around the MLflow Model Registry (register, fetch) and the offline demo."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from mlfactory.cli.base import TARGET_HELP, VERBOSE, app, console, friendly_errors
from mlfactory.errors import BundleError
from mlfactory.output import configure_output


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
    from mlfactory.mlflow_store import tracking_uri
    from mlfactory.registry import is_model_uri, register_bundle, set_aliases
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
