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
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mlfactory.baselines import BaselineScore, majority_baseline, simple_baseline
from mlfactory.bundle import load_bundle
from mlfactory.config.loader import Recipe, load_recipe
from mlfactory.data.dataset import Item
from mlfactory.demo_folder import (
    NEXT_RUN,
    claim_demo_folder,
    publish_next_run,
    removed_unless_finished,
)
from mlfactory.demo_places import demo_overrides, next_commands
from mlfactory.demo_traffic import Traffic, check, in_arrival_order, send, summary
from mlfactory.errors import Interrupted, MlfactoryError
from mlfactory.mlflow_store import shown_url
from mlfactory.registry import register_bundle
from mlfactory.serving.process import ServerStartError, running_server
from mlfactory.serving.settings import env_name
from mlfactory.termination import sigterm_as_ctrl_c

if TYPE_CHECKING:
    from mlfactory.training.train import TrainResult

DEMO_RECIPE = "digits"
# The alias the demo's newest model gets in the registry (each demo registers a new version).
DEMO_ALIAS = "champion"


def run_demo(
    out: Path, console: Console, recipe_name: str = DEMO_RECIPE, overrides: list[str] | None = None
) -> None:
    """Run the whole loop and print a summary (`overrides` adjust the recipe, e.g. in tests).
    The demo's MLflow store is MLFLOW_TRACKING_URI's, else one in `out` (`demo_places`).

    Raises:
        MlfactoryError: `out` is a file, or a folder that holds files of something else than a
            demo (see `claim_demo_folder`), or cannot be written.
        Interrupted: Ctrl-C or SIGTERM; an earlier demo in `out` is left as it was.
    """
    recipe = load_recipe(recipe_name, [*demo_overrides(out), *(overrides or [])])
    made = claim_demo_folder(out)
    console.rule(
        Text.assemble(
            ("mlfactory demo", "bold"), f": recipe '{recipe.name}' ({recipe.config.description})"
        )
    )
    console.print("1/5 preparing data, training, exporting and evaluating the bundle ...")
    with sigterm_as_ctrl_c(), removed_unless_finished(out, made):
        result = _train_next_run(recipe, out, earlier=not made)
    bundle = load_bundle(out / "bundle")
    bundle_path = bundle.path.resolve()
    tracking_uri = recipe.config.tracking.tracking_uri
    registered, _ = register_bundle(bundle, aliases=[DEMO_ALIAS], store=tracking_uri)
    for line in (
        f"registry: {registered.uri} (bundle version {bundle.meta.version}), alias {DEMO_ALIAS}",
        f"  in {shown_url(tracking_uri)}",
    ):
        console.print(line, soft_wrap=True, highlight=False)

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
    with sigterm_as_ctrl_c():
        _serve_and_monitor(bundle_path, out, log_file, test_items, console)

    console.print("5/5 results")
    console.print(_scores(recipe.config.model.backbone, result.metrics, baselines))
    console.print(f"MLflow run: {result.mlflow_run_id}", highlight=False)
    champion = f"models:/{registered.name}@{DEMO_ALIAS}"
    # Commands to copy: printed whole, never broken at the terminal's width.
    for line in next_commands(bundle_path, champion, tracking_uri, log_file, len(test_items)):
        console.print(line, soft_wrap=True, highlight=False)
    console.print(f"took {result.seconds:.0f} s to train and bundle")


def _train_next_run(recipe: Recipe, out: Path, earlier: bool) -> TrainResult:
    """Train in `out/NEXT_RUN` and move the run into `out` once its bundle exists: until then
    an `earlier` demo in `out` stays whole.

    Raises:
        Interrupted: Ctrl-C (or SIGTERM) stopped the training; says to run the demo again.
    """
    from mlfactory.training.train import train

    try:
        result = train(recipe, out / NEXT_RUN, progress=sys.stderr.isatty(), force=True)
    except (Interrupted, KeyboardInterrupt) as exc:
        killed = re.search(r"MLflow run \w+ marked KILLED; ", str(exc))
        kept = f" (the earlier demo in {out} is kept)" if earlier else ""
        raise Interrupted(
            f"interrupted; {killed.group(0) if killed else ''}the demo's training stopped{kept}: "
            f"run `mlfactory demo --out {out}` again to start over"
        ) from None
    assert result.bundle is not None  # one process: it owns the run
    publish_next_run(out)
    return result


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
    try:
        with running_server(bundle_path, out / "server.log", env) as server:
            held_out = send(server.url, test_items, "held-out")
            held_out_report = check(bundle_path, log_url, held_out)
            inverted = send(server.url, test_items, "inverted", invert=True)
            inverted_report = check(bundle_path, log_url, inverted)
    except ServerStartError:  # its own words may name `serve` options the demo does not take
        raise MlfactoryError(
            f"the demo's server did not start (see {out / 'server.log'}); the bundle is ready in "
            f"{bundle_path}: run the demo again, or serve it with `mlfactory serve`"
        ) from None
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
