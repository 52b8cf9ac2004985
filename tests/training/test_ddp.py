"""Distributed training: `mlfactory train` under Lightning DDP (2 CPU processes, gloo).

Lightning's DDP launcher starts the second rank by running the same command line again, so this
runs the real CLI as a subprocess, as a user would; DDP's refusal of a parameter outside the loss
is the same in one rank, which runs in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from torch import nn

from mlfactory.bundle import load_bundle
from mlfactory.config.loader import load_recipe
from mlfactory.errors import ConfigError
from mlfactory.output import configure_output
from mlfactory.predictor import Predictor
from mlfactory.serving.process import free_port
from mlfactory.training import train as train_module
from tests.conftest import (
    SMALL_NETWORK,
    fast_digits_overrides,
    fast_news_overrides,
    untraced_env,
)
from tests.numerics import assert_parity_recorded

MLFACTORY = str(Path(sys.executable).parent / "mlfactory")


def train_on_two_processes(
    recipe: str, out: Path, arguments: list[str]
) -> subprocess.CompletedProcess[str]:
    """`mlfactory train RECIPE --out OUT ARGUMENTS` under DDP with 2 CPU processes; it must
    succeed."""
    ddp = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
    done = subprocess.run(
        [MLFACTORY, "train", recipe, "--out", str(out), *arguments, *ddp],
        capture_output=True,
        text=True,
        timeout=600,
        env=untraced_env({"OMP_NUM_THREADS": "1"}),  # two ranks on two cores
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_ddp_run_has_one_owner_one_mlflow_run_and_one_bundle(
    digit_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    overrides = [*fast_digits_overrides(digit_folder, tmp_path, epochs=2), *SMALL_NETWORK]
    done = train_on_two_processes("digits", out, [*overrides, "-v"])
    assert "MEMBER: 2/2" in done.stderr  # really two processes (Lightning's line, shown by -v)

    # Only rank 0 reports; its report names the run and the bundle.
    assert done.stdout.strip().splitlines() == [str((out / "bundle").resolve())]
    lines = done.stderr.splitlines()
    for phase in ("export: ", "evaluation: test accuracy", "done in ", "note: "):
        assert sum(line.startswith(phase) for line in lines) == 1, phase
    # The dataset's summary, then the train and validation splits encoded once (by one process;
    # the other rank reads the same rows).
    data_lines = [line for line in lines if line.startswith("data: ")]
    assert len(data_lines) == 2, data_lines
    assert "train split encoded once" in data_lines[1], data_lines
    assert "val split encoded once" in data_lines[1], data_lines

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [run.info.status for run in runs] == ["FINISHED"]
    run_id = runs[0].info.run_id
    assert run_id in done.stderr
    # --resume needs the owner's run id, not a non-zero rank's empty one.
    assert json.loads((out / "run.json").read_text())["mlflow_run_id"] == run_id
    bundle = load_bundle(out / "bundle")
    assert bundle.meta.mlflow_run_id == run_id
    assert bundle.meta.metrics["test"]["split_size"] > 0


def test_ddp_fine_tunes_a_pruned_text_transformer_that_exports_and_serves(tmp_path: Path) -> None:
    """The `news` recipe's real MiniLM with half its attention heads and feed-forward neurons,
    one epoch on real articles under DDP: every parameter that trains gets a gradient (the
    unused pooler of the first token stays frozen, or DDP stops the first step), both ranks
    prune the same way, and the smaller bundle exports with parity and serves."""
    out = tmp_path / "run"
    pruning = ["model.prune_heads=0.5", "model.prune_channels=0.5"]
    done = train_on_two_processes("news", out, [*fast_news_overrides(tmp_path), *pruning])
    pruned = [line for line in done.stderr.splitlines() if line.startswith("model: pruned")]
    assert pruned == [
        "model: pruned 50% of the backbone's attention heads (least L1 norm, Torch-Pruning): "
        "22.71 M -> 20.94 M parameters, 12 -> 6 heads per block",
        "model: pruned 50% of the backbone's feed-forward neurons (least L1 norm, "
        "Torch-Pruning): 20.94 M -> 17.40 M parameters, embedding 384 -> 384",
    ]
    bundle = load_bundle(out / "bundle")
    assert bundle.meta.config["model"]["prune_heads"] == 0.5
    assert_parity_recorded(bundle.meta.export, bundle.meta.metrics["test"]["split_size"])
    # The narrower weights are what was exported (float32: 4 bytes a parameter, and the
    # unpruned model's 22.71 M would take 91 MB).
    assert bundle.model_path.stat().st_size < 0.8 * 4 * 22.71e6
    (prediction,) = Predictor(bundle).predict([b"Crude oil prices rose sharply today."])
    assert prediction.label in bundle.meta.labels


def test_two_machines_under_torchrun_one_owns_the_run(digit_folder: Path, tmp_path: Path) -> None:
    """`torchrun --nnodes=2`: two "machines" of one process each, rendezvous on loopback, each
    with its own working folder (nothing shared but the data), as on two hosts. The first
    machine's process owns the run; the other trains beside it and touches neither a bundle
    nor the tracking store, and both exit 0."""
    overrides = [
        f"data.source={digit_folder}",
        "data.val_fraction=0.2",
        "data.test_fraction=0.2",
        "trainer.max_epochs=2",
        "trainer.batch_size=8",
        "preprocess.resize_size=32",
        "preprocess.crop_size=32",
        *SMALL_NETWORK,
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.num_nodes=2",
        "trainer.strategy=ddp",
    ]
    port = free_port()
    machines = [tmp_path / "host-0", tmp_path / "host-1"]
    env = untraced_env({"OMP_NUM_THREADS": "1"})
    launched = []
    for rank, folder in enumerate(machines):
        folder.mkdir()
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2"]
        torchrun += ["--nproc-per-node=1", f"--node-rank={rank}", "--master-addr=127.0.0.1"]
        torchrun += [f"--master-port={port}", MLFACTORY, "train", "digits", *overrides, "-v"]
        launched.append(
            subprocess.Popen(
                torchrun, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )
    outputs = [process.communicate(timeout=600) for process in launched]
    for process, (_, stderr) in zip(launched, outputs, strict=True):
        assert process.returncode == 0, stderr.decode()[-3000:]
    owner, other = (stdout.decode() for stdout, _ in outputs)
    stderr = outputs[0][1].decode() + outputs[1][1].decode()
    assert "MEMBER: 1/2" in stderr and "MEMBER: 2/2" in stderr  # one process group of two

    # The owner reports the run and holds the bundle, the run folder and the MLflow store.
    bundle_dir = machines[0] / "runs" / "digits" / "bundle"
    assert owner.strip().splitlines() == [str(bundle_dir.resolve())]
    mlflow.set_tracking_uri(f"sqlite:///{machines[0] / 'mlruns.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [run.info.status for run in runs] == ["FINISHED"]
    assert load_bundle(bundle_dir).meta.mlflow_run_id == runs[0].info.run_id
    # The other machine: no report, no bundle, no tracking store of its own.
    assert other == ""
    assert not (machines[1] / "runs" / "digits" / "bundle").exists()
    assert not (machines[1] / "mlruns.db").exists()


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_a_parameter_outside_the_loss_is_a_one_line_error_naming_it(
    strategy: str,
    digit_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The real network plus a layer that trains but never reaches the loss: DDP stops at the
    second step, and Lightning's rewording of its error does not say which parameters; the run
    fails with one line that names the layer's and the way out, and marks its MLflow run
    FAILED. Under ddp_spawn the rank runs in a process of its own and its error comes back as
    its traceback's text; it prints as quietly as the CLI's process (no Lightning set-up lines)."""
    configure_output(False)  # as the CLI does
    build_classifier = train_module.build_classifier

    def with_a_layer_the_loss_never_sees(*args: object) -> nn.Module:
        network = build_classifier(*args)
        network.add_module("side_layer", nn.Linear(4, 4))
        return network

    monkeypatch.setattr(train_module, "build_classifier", with_a_layer_the_loss_never_sees)
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    ddp = ["trainer.accelerator=cpu", "trainer.devices=1", f"trainer.strategy={strategy}"]
    overrides = [*fast_digits_overrides(digit_folder, tmp_path, epochs=1), *SMALL_NETWORK, *ddp]
    # Lightning exports its ranks, port and thread count, and sets torch's threads.
    environment, threads = dict(os.environ), torch.get_num_threads()
    try:
        with pytest.raises(ConfigError) as raised:
            train_module.train(load_recipe("digits", overrides), tmp_path / "run", progress=False)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(environment)
        torch.set_num_threads(threads)
    assert "Initializing distributed" not in capfd.readouterr().err
    message = str(raised.value)
    prefix = f"trainer.strategy={strategy}: DDP stopped because parameters that train "
    assert message.startswith(prefix), message
    assert "(side_layer.weight, side_layer.bias)" in message, message
    assert message.endswith("set trainer.strategy=ddp_find_unused_parameters_true")
    assert "\n" not in message
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    (run,) = mlflow.search_runs(experiment_names=["mlfactory"], output_format="list")
    assert run.info.status == "FAILED"
