"""How far ONNX Runtime's probabilities are from PyTorch's: every backbone family, two kernel sets.

    python -m benchmarks.parity_spread                     # train once into runs/parity, measure
    python -m benchmarks.parity_spread digits birdcalls    # some runs only
    python -m benchmarks.parity_spread --out runs/parity --doc docs/numerics.md

Each run is a recipe trained as `mlfactory train` trains it, on its offline default data (plus
`digits-32px`, the test suite's small digits run); trained runs found under `--out` are reused.
The export parity check (`mlfactory.training.export.parity_spread`) is then measured on every
item of every split, in two fresh processes: default kernels, and torch, oneDNN and numpy forced
to AVX2 (`FORCED_AVX2`). ONNX Runtime has no such switch: it always picks the best kernels this
CPU has, so the second setting compares AVX2 torch with the CPU's own ONNX Runtime kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

FORCED_AVX2 = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4",
}
# name -> (recipe, overrides). The defaults are what a user trains; digits-32px is the suite's
# `trained_digits` fixture (small, 32 px, 3 epochs), whose export first tripped the old check.
RUNS: dict[str, tuple[str, list[str]]] = {
    "digits": ("digits", []),
    "digits-32px": (
        "digits",
        [
            "data.max_per_class=40",
            "trainer.batch_size=8",
            "trainer.lr=0.001",
            "preprocess.resize_size=32",
            "preprocess.crop_size=32",
        ],
    ),
    "news": ("news", []),
    "ai_text": ("ai_text", []),
    "birdcalls": ("birdcalls", []),
    "emotions": ("emotions", []),
}


def train_run(name: str, out: Path) -> Path:
    """Train run `name` into out/name unless a bundle is already there; return its folder."""
    from mlfactory.config.loader import load_recipe
    from mlfactory.training.train import train

    run_dir = out / name
    if (run_dir / "bundle" / "bundle.json").is_file():
        return run_dir
    recipe, overrides = RUNS[name]
    local = [
        f"data.cache_dir={out.resolve() / 'cache'}",
        f"tracking.tracking_uri=sqlite:///{out.resolve() / 'mlruns.db'}",
        f"tracking.artifact_location={out.resolve() / 'artifacts'}",
    ]
    train(load_recipe(recipe, [*overrides, *local]), run_dir, progress=False)
    return run_dir


def trained_graph(run_dir: Path) -> tuple[Any, Any, Any]:
    """The run's bundle, its best weights as the exported graph (eval mode), and its recipe."""
    import torch

    from mlfactory.bundle import load_bundle
    from mlfactory.config.loader import load_recipe_from_dict
    from mlfactory.training.backbones import build_classifier
    from mlfactory.training.network import InferenceGraph

    bundle = load_bundle(run_dir / "bundle")
    config = load_recipe_from_dict(bundle.meta.config).config
    net = build_classifier(config, len(bundle.meta.labels))
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    net.load_state_dict(
        {k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")}
    )
    return bundle, InferenceGraph(net).eval(), config


def measure(run_dir: Path) -> dict[str, Any]:
    """`parity_spread` of a trained run's best weights against its bundle, on all its items."""
    import numpy as np
    import torch

    from mlfactory.config.loader import preprocessing_params
    from mlfactory.data.prepare import prepare_dataset
    from mlfactory.modalities import stack_inputs
    from mlfactory.training.backbones import training_encoder
    from mlfactory.training.export import parity_spread

    bundle, graph, config = trained_graph(run_dir)
    encoder, _ = training_encoder(config, preprocessing_params(config), run_dir)
    items = prepare_dataset(config).items
    spread = parity_spread(graph, bundle, encoder, items)
    # The logits' range says how confident the model is: the spread grows with it.
    widest = 0.0
    for start in range(0, len(items), 64):
        batch = stack_inputs([encoder(item.read_bytes()) for item in items[start : start + 64]])
        with torch.no_grad():
            logits = graph.classifier(*(torch.from_numpy(a) for a in batch.values())).numpy()
        widest = max(widest, float(np.ptp(logits, axis=1).max()))
    return {
        "run": run_dir.name,
        "backbone": config.model.backbone,
        "frozen": config.model.freeze_backbone,
        "items": spread.items,
        "max_abs_diff": spread.max_abs_diff,
        "max_rel_diff": spread.max_rel_diff,
        "tolerance_used": spread.tolerance_used,
        "labels_differ": spread.labels_differ,
        "max_embedding_diff": spread.max_embedding_diff,
        "logit_range": widest,
        "passes": spread.within_tolerance,
        "old_check_fails": spread.max_abs_diff > 1e-4,
    }


def export_bugs(run_dir: Path, scratch: Path) -> list[dict[str, Any]]:
    """The spread of real export bugs on an image run's test split (tests/training/test_export.py).

    Weights that are not the exported ones, a model left in training mode, a bundle that
    normalises differently from training, and one logit moved a little.
    """
    import shutil

    import torch

    from mlfactory.bundle import META_FILE, load_bundle
    from mlfactory.config.loader import preprocessing_params
    from mlfactory.data.prepare import prepare_dataset
    from mlfactory.training.backbones import build_classifier, training_encoder
    from mlfactory.training.export import parity_spread
    from mlfactory.training.network import InferenceGraph

    bundle, graph, config = trained_graph(run_dir)
    encoder, _ = training_encoder(config, preprocessing_params(config), run_dir)
    items = prepare_dataset(config).split("test")
    torch.manual_seed(0)
    cases: dict[str, tuple[Any, Any]] = {
        "faithful export": (graph, bundle),
        "weights before training": (
            InferenceGraph(build_classifier(config, len(bundle.meta.labels))).eval(),
            bundle,
        ),
        "model left in training mode": (trained_graph(run_dir)[1].train(), bundle),
    }
    for name, preprocessing in {
        "bundle normalises with mean = std = 0.5": {"mean": [0.5] * 3, "std": [0.5] * 3},
        "bundle's mean and std in BGR order": {
            "mean": bundle.meta.preprocessing["mean"][::-1],
            "std": bundle.meta.preprocessing["std"][::-1],
        },
    }.items():
        copy = scratch / run_dir.name / name.replace(" ", "-")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(bundle.path, copy)
        meta = json.loads((copy / META_FILE).read_text())
        meta["preprocessing"].update(preprocessing)
        (copy / META_FILE).write_text(json.dumps(meta))
        cases[name] = (graph, load_bundle(copy))
    for shift in (0.05, 0.2):
        moved = trained_graph(run_dir)[1]
        with torch.no_grad():
            moved.classifier.head.bias[0] += shift
        cases[f"class 0's logit + {shift}"] = (moved, bundle)
    rows = []
    for name, (case_graph, case_bundle) in cases.items():
        spread = parity_spread(case_graph, case_bundle, encoder, items)
        rows.append(
            {
                "run": run_dir.name,
                "case": name,
                "items": spread.items,
                "max_rel_diff": spread.max_rel_diff,
                "max_embedding_diff": spread.max_embedding_diff,
                "tolerance_used": spread.tolerance_used,
                "labels_differ": spread.labels_differ,
                "passes": spread.within_tolerance,
            }
        )
    return rows


def measure_in_subprocess(runs: list[Path], forced: bool, bugs: bool) -> dict[str, Any]:
    """`measure` (and `export_bugs`) in a fresh process: kernels are chosen at import."""
    env = {**os.environ, **(FORCED_AVX2 if forced else {})}
    if not forced:
        for name in FORCED_AVX2:
            env.pop(name, None)
    command = [sys.executable, "-m", "benchmarks.parity_spread", "--measure", *map(str, runs)]
    command += ["--bugs"] if bugs else []
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measurement failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def cpu_name() -> str:
    flags = ""
    name = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and name == "unknown CPU":
            name = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = line
    isa = "AVX2"
    if "avx512f" in flags:
        isa = "AVX-512 + VNNI" if "avx512_vnni" in flags else "AVX-512"
    return f"{name} ({isa}), {os.cpu_count()} cores"


def render(settings: list[dict[str, Any]]) -> str:
    """A markdown table: one row per run and kernel setting."""
    from mlfactory.training.export import PARITY_ATOL, PARITY_RTOL

    lines = [
        f"CPU: {cpu_name()}. Check: |p_onnx - p_torch| <= {PARITY_ATOL:g} + {PARITY_RTOL:g} * "
        f"p_torch, |e_onnx - e_torch| <= {PARITY_RTOL:g} * max(|e_torch|, |e_onnx|).",
        "",
        "| run | backbone | kernels | items | logit range | max abs diff | max rel diff "
        "| embedding diff | share of tolerance | top label differs | check | old check (1e-4) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for setting in settings:
        for r in setting["runs"]:
            backbone = r["backbone"] + (" (frozen)" if r["frozen"] else "")
            used = max(r["tolerance_used"], r["max_embedding_diff"] / PARITY_RTOL)
            lines.append(
                f"| {r['run']} | {backbone} | {setting['kernels']} | {r['items']} "
                f"| {r['logit_range']:.1f} | {r['max_abs_diff']:.1e} | {r['max_rel_diff']:.1e} "
                f"| {r['max_embedding_diff']:.1e} | {used:.1%} | {r['labels_differ']} "
                f"| {'passes' if r['passes'] else 'FAILS'} "
                f"| {'fails' if r['old_check_fails'] else 'passes'} |"
            )
    return "\n".join(lines)


def render_bugs(rows: list[dict[str, Any]]) -> str:
    """A markdown table: the spread of each export bug, per image run."""
    lines = [
        "| run | case | test items | max rel diff | embedding diff | share of tolerance "
        "| top label differs | check |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['case']} | {r['items']} | {r['max_rel_diff']:.2g} "
            f"| {r['max_embedding_diff']:.2g} | {r['tolerance_used']:.3g}x "
            f"| {r['labels_differ']} | {'passes' if r['passes'] else 'rejects'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help=f"runs to measure (default: all of {list(RUNS)})")
    parser.add_argument("--out", type=Path, default=Path("runs/parity"))
    parser.add_argument("--measure", action="store_true", help="measure these run folders")
    parser.add_argument("--bugs", action="store_true", help="with --measure: export bugs too")
    args = parser.parse_args()
    if args.measure:
        from mlfactory.training.float_kernels import float_kernels

        rows = [measure(Path(run)) for run in args.runs]
        bugs = []
        if args.bugs:
            scratch = Path(args.runs[0]).parent / "bug-bundles"
            for run in args.runs:
                if RUNS[Path(run).name][0] == "digits":
                    bugs += export_bugs(Path(run), scratch)
        print(json.dumps({"kernels": float_kernels(), "runs": rows, "bugs": bugs}))
        return
    names = args.runs or list(RUNS)
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        parser.error(f"unknown runs {unknown}; known: {list(RUNS)}")
    run_dirs = [train_run(name, args.out) for name in names]
    settings = [measure_in_subprocess(run_dirs, forced, not forced) for forced in (False, True)]
    (args.out / "parity_spread.json").write_text(json.dumps(settings, indent=2))
    print(render(settings))
    print()
    print(render_bugs(settings[0]["bugs"]))


if __name__ == "__main__":
    main()
