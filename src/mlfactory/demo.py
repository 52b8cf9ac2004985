"""`mlfactory demo`: the whole loop, offline, on real data shipped by a PyPI package.

prepare -> train -> evaluate -> bundle -> register it in the MLflow Model Registry as the
`champion` -> serve in the background -> predict the held-out files
over HTTP and send their labels back -> predict them again inverted -> check both streams as
`mlfactory monitor` does -> stop the server, then print where everything went and how the model
compares with trivial and simple baselines on the same test split.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mlfactory.baselines import BaselineScore, majority_baseline, simple_baseline
from mlfactory.config.loader import load_recipe
from mlfactory.data.dataset import Item
from mlfactory.demo_traffic import Traffic, check, in_arrival_order, send, summary
from mlfactory.errors import MlfactoryError
from mlfactory.registry import register_bundle
from mlfactory.serving.process import running_server
from mlfactory.serving.settings import env_name

DEMO_RECIPE = "digits"
# Written into the demo's folder first: a later demo may replace what a folder holding it holds.
DEMO_MARK = ".mlfactory-demo"
# The alias the demo's newest model gets in the registry (each demo registers a new version).
DEMO_ALIAS = "champion"


def run_demo(
    out: Path, console: Console, recipe_name: str = DEMO_RECIPE, overrides: list[str] | None = None
) -> None:
    """Run the whole loop and print a summary (`overrides` adjust the recipe, e.g. in tests).

    Raises:
        MlfactoryError: `out` is a file, or a folder that holds files of something else than a
            demo (see `claim_demo_folder`).
    """
    from mlfactory.training.train import train

    recipe = load_recipe(recipe_name, overrides)
    claim_demo_folder(out)
    console.rule(
        Text.assemble(
            ("mlfactory demo", "bold"), f": recipe '{recipe.name}' ({recipe.config.description})"
        )
    )
    console.print("1/5 preparing data, training, exporting and evaluating the bundle ...")
    # The demo's folder is its own: a second demo replaces the first one's run.
    result = train(recipe, out, progress=sys.stderr.isatty(), force=True)
    assert result.bundle is not None  # one process: it owns the run
    bundle = result.bundle
    bundle_path = bundle.path.resolve()
    tracking_uri = recipe.config.tracking.tracking_uri
    registered, _ = register_bundle(bundle, aliases=[DEMO_ALIAS], store=tracking_uri)
    console.print(
        f"registry: {registered.uri}, alias {DEMO_ALIAS}, in {tracking_uri}",
        soft_wrap=True,
        highlight=False,
    )

    console.print("2/5 baselines on the same test split ...")
    baselines = [
        majority_baseline(result.dataset),
        simple_baseline(result.dataset, bundle.meta.preprocessing),
    ]

    console.print(
        "3/5 serving the bundle on a free local port: the held-out test files over HTTP, "
        "their true labels back to /v1/feedback, then the same files inverted ..."
    )
    log_file = (out / "predictions.db").resolve()
    test_items = in_arrival_order(result.dataset.split("test"), recipe.config.seed)
    _serve_and_monitor(bundle_path, out, log_file, test_items, console)

    console.print("5/5 results")
    console.print(_scores(recipe.config.model.backbone, result.metrics, baselines))
    champion = f"models:/{registered.name}@{DEMO_ALIAS}"
    # Commands to copy: printed whole, never broken at the terminal's width.
    for line in (
        f"bundle:     {bundle_path}",
        f"MLflow run: {result.mlflow_run_id}  (open: mlflow ui --backend-store-uri {tracking_uri})",
        f"serve it:   mlfactory serve {bundle_path} --port 8000",
        f"            mlfactory serve {champion} --port 8000   # the same, from the registry",
        f"predict:    mlfactory predict {bundle_path} FILE...",
        f"prediction log of the demo server: {log_file}",
        f"monitor it: mlfactory monitor {bundle_path} --log {log_file} "
        f"--last {len(test_items)} --html monitor.html   # the inverted stream",
    ):
        console.print(line, soft_wrap=True, highlight=False)
    console.print(f"took {result.seconds:.0f} s to train and bundle")


def claim_demo_folder(out: Path) -> None:
    """Make `out` the demo's: a new or empty folder, or one an earlier demo made (marked with
    DEMO_MARK, or with the server log and run state that every demo leaves). Anything else is
    refused: the demo replaces the run that its folder holds, and must not replace a user's."""
    if out.exists() and not out.is_dir():
        raise MlfactoryError(f"--out {out} is a file: give a folder for the demo")
    earlier_demo = (out / DEMO_MARK).is_file() or all(
        (out / name).is_file() for name in ("server.log", "run.json")
    )
    if out.is_dir() and any(out.iterdir()) and not earlier_demo:
        raise MlfactoryError(
            f"--out {out} holds files that no demo wrote, which the demo would replace: "
            "give a new or empty folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARK).write_text("a folder of `mlfactory demo`; the next demo replaces it\n")


def _serve_and_monitor(
    bundle_path: Path, out: Path, log_file: Path, test_items: list[Item], console: Console
) -> None:
    """Steps 3 and 4: serve the bundle, send the held-out files and then the same files
    inverted, and print what monitoring says of each stream."""
    for stale in (log_file, *(log_file.with_name(log_file.name + end) for end in ("-wal", "-shm"))):
        stale.unlink(missing_ok=True)  # the log of an earlier demo: this one starts afresh
    log_url = f"sqlite:///{log_file}"
    env = {**os.environ, "MLFACTORY_LOG_URL": log_url}
    # a local server of its own: open to the demo's feedback whatever token this shell sets
    env.pop(env_name("monitor_token"), None)
    with running_server(bundle_path, out / "server.log", env) as server:
        held_out = send(server.url, test_items, "held-out")
        held_out_report = check(bundle_path, log_url, held_out)
        inverted = send(server.url, test_items, "inverted", invert=True)
        inverted_report = check(bundle_path, log_url, inverted)
    console.print(_examples(held_out, held_out_report.ood_threshold))

    console.print("4/5 monitoring each stream as `mlfactory monitor` does")
    console.print(summary(f"{len(test_items)} held-out files", held_out_report, held_out))
    console.print(summary(f"the same {len(test_items)} inverted", inverted_report, inverted))


def _scores(backbone: str, metrics: dict[str, Any], baselines: list[BaselineScore]) -> Table:
    """The model's test accuracy and macro-F1 beside the baselines'."""
    scores = Table("model", "test accuracy", "test macro-F1")
    scores.add_row(
        f"mlfactory ({backbone})", f"{metrics['accuracy']:.4f}", f"{metrics['f1_macro']:.4f}"
    )
    for baseline in baselines:
        scores.add_row(baseline.name, f"{baseline.accuracy:.4f}", f"{baseline.f1_macro:.4f}")
    return scores


def _examples(traffic: Traffic, ood_threshold: float) -> Table:
    """One held-out file of each label (at most five) with the server's answer; the OOD
    score's column names the threshold above which an input is out of distribution."""
    ood_column = "OOD score"
    if math.isfinite(ood_threshold):
        ood_column += f" (threshold {ood_threshold:.2f})"
    table = Table(
        "held-out file", "true label", "predicted", "score", ood_column, "in distribution"
    )
    shown: set[str] = set()
    for item, prediction in zip(traffic.items, traffic.predictions, strict=True):
        if item.label in shown or len(shown) == 5:
            continue
        shown.add(item.label)
        ood_score = prediction.get("ood_score")
        in_distribution = prediction.get("in_distribution")
        table.add_row(
            Path(item.path or "").name,
            item.label,
            prediction["label"],
            f"{prediction['score']:.3f}",
            "-" if ood_score is None else f"{ood_score:.2f}",
            "-" if in_distribution is None else ("yes" if in_distribution else "NO"),
        )
    return table
