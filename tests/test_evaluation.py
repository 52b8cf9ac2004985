"""`mlfactory evaluate` of a bundle: ONNX Runtime only, metrics written back, no torch imported."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from mlfactory.bundle import load_bundle
from mlfactory.cli import app
from mlfactory.training.train import TrainResult
from tests.conftest import python_json


def test_evaluating_a_bundle_imports_neither_torch_nor_lightning(
    trained_digits: TrainResult,
) -> None:
    script = textwrap.dedent(
        """
        import json, sys
        from mlfactory.evaluate_command import evaluate_target

        metrics = evaluate_target(sys.argv[1])
        leaked = sorted(
            name for name in sys.modules
            if name.split(".")[0] in ("torch", "lightning", "pytorch_lightning", "timm")
            or name.startswith("mlfactory.training")
        )
        print(json.dumps({"accuracy": metrics["accuracy"], "leaked": leaked}))
        """
    )
    report = python_json(script, str(trained_digits.bundle.path))
    assert report["leaked"] == []
    stored = load_bundle(trained_digits.bundle.path).meta.metrics["test"]
    # The same bundle, the same test split, the same ONNX Runtime: the same accuracy exactly.
    assert report["accuracy"] == stored["accuracy"]


def test_a_class_without_test_items_is_named_and_left_out_of_macro_f1(
    trained_digits: TrainResult,
) -> None:
    from sklearn.metrics import f1_score

    from mlfactory.evaluation import evaluate_items
    from mlfactory.predictor import Predictor

    predictor = Predictor(trained_digits.bundle)
    items = [i for i in trained_digits.dataset.split("test") if i.label not in ("0", "1")]
    metrics = evaluate_items(predictor, items)

    assert metrics["unsupported_labels"] == ["0", "1"]
    assert metrics["per_class"]["0"]["support"] == 0
    truth = [item.label for item in items]
    predicted = [
        predictor.predict([item.read_bytes()])[0].label for item in items
    ]  # one by one: the same labels the batched evaluation found
    supported = [str(d) for d in range(2, 10)]
    expected = f1_score(truth, predicted, labels=supported, average="macro", zero_division=0)
    assert metrics["f1_macro"] == expected
    assert metrics["accuracy"] == sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(
        items
    )


def test_evaluating_on_changed_data_warns_and_the_report_shows_both_fingerprints(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    """The recipe's data no longer what the bundle trained on (its fingerprint differs): the
    metrics are still recorded, with a `warning:` naming both fingerprints, and the report
    says which data they were computed on. A copy of the bundle, with no MLflow run to write."""
    folder = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, folder)
    meta = json.loads((folder / "bundle.json").read_text())
    evaluated, trained = trained_digits.dataset.fingerprint, "b16f" + "0" * 60
    meta.update(data_fingerprint=trained, mlflow_run_id=None)
    (folder / "bundle.json").write_text(json.dumps(meta))

    result = CliRunner().invoke(app, ["evaluate", str(folder)])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if line.startswith("warning: the")]
    assert len(warning) == 1 and evaluated in warning[0] and trained in warning[0], result.output
    assert load_bundle(folder).meta.metrics["data_fingerprint"] == evaluated
    out = tmp_path / "card.html"
    assert CliRunner().invoke(app, ["report", str(folder), "--out", str(out)]).exit_code == 0
    page = out.read_text()
    assert f"Computed on data fingerprint <code>{evaluated}</code>: <b>not the data" in page
    assert f"(<code>{trained}</code>)" in page
