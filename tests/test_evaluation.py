"""`mlfactory evaluate` of a bundle: ONNX Runtime only, metrics written back, no torch imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from mlfactory.bundle import load_bundle
from mlfactory.training.train import TrainResult


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
    done = subprocess.run(
        [sys.executable, "-c", script, str(trained_digits.bundle.path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["leaked"] == []
    stored = load_bundle(trained_digits.bundle.path).meta.metrics["test"]
    # The same bundle, the same test split, the same ONNX Runtime: the same accuracy exactly.
    assert report["accuracy"] == stored["accuracy"]
