"""The recipe's Lightning Trainer (`make_trainer`): how often it logs step losses."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

from mlfactory.config.loader import load_recipe
from mlfactory.errors import ConfigError
from mlfactory.training.lightning_trainer import DEVICES, check_devices, make_trainer


@pytest.mark.parametrize(
    ("settings", "train_items", "interval"),
    [
        ([], 40, 5),  # 5 batches of 8: once per epoch
        ([], 1000, 10),
        (["trainer.limit_train_batches=2"], 1000, 2),
        # Each of 2 ranks gets 20 items: 3 batches (DistributedSampler pads 39 to 40 too).
        (["trainer.devices=2", "trainer.strategy=ddp_spawn"], 40, 3),
        (["trainer.devices=2", "trainer.strategy=ddp_spawn"], 39, 3),
        (["trainer.devices=2", "trainer.num_nodes=2", "trainer.strategy=ddp"], 40, 2),
    ],
)
def test_step_losses_are_logged_at_least_once_per_epoch_of_each_rank(
    settings: list[str], train_items: int, interval: int, tmp_path: Path
) -> None:
    """Lightning warns that a rank's batches are fewer than the logging interval, and logs no
    step loss that epoch; under DDP each rank sees its own share of the split."""
    overrides = ["trainer.accelerator=cpu", "trainer.batch_size=8", *settings]
    config = load_recipe("digits", overrides).config
    trainer, _ = make_trainer(
        config, None, tmp_path / "checkpoints", progress=False, train_items=train_items
    )
    assert trainer.log_every_n_steps == interval  # type: ignore[attr-defined]


def settings_this_machine_cannot_run() -> list[str]:
    """Accelerators with no device here (all four on CPUs), FSDP without a CUDA GPU, DeepSpeed
    without its package (the dev install has none), and GPU indices or -1 on the CPU."""
    settings = [
        f"trainer.accelerator={name}"
        for name, (kinds, _) in DEVICES.items()
        if not any(kind.is_available() for kind in kinds)
    ]
    if not CUDAAccelerator.is_available():
        settings.append("trainer.strategy=fsdp")
    settings += [
        "trainer.accelerator=cpu trainer.devices=[1]",
        "trainer.accelerator=cpu trainer.devices=-1",
    ]
    if importlib.util.find_spec("deepspeed") is None:
        settings.append("trainer.strategy=deepspeed")
    if CUDAAccelerator.is_available():  # one GPU more than there are, by count and by index
        present = CUDAAccelerator.auto_device_count()
        settings += [
            f"trainer.accelerator=cuda trainer.devices={present + 1}",
            f"trainer.accelerator=cuda trainer.devices=[{present}]",
        ]
    return settings


@pytest.mark.parametrize("setting", settings_this_machine_cannot_run())
def test_settings_the_machine_cannot_run_are_one_line_before_the_run_starts(
    setting: str, digit_folder: Path, tmp_path: Path
) -> None:
    """Lightning refused these only after the MLflow run was open (left FAILED, with a run
    folder), and a TPU without torch_xla, FSDP or device indices on a CPU with a traceback."""
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from mlfactory.cli import app
    from tests.conftest import fast_digits_overrides

    overrides = [*fast_digits_overrides(digit_folder, tmp_path), *setting.split()]
    result = CliRunner().invoke(
        app, ["train", "digits", *overrides, "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 2, result.output
    error = result.output.strip().splitlines()[-1]  # after the seed recipe's note
    assert error.startswith(f"error: {setting.split()[-1]}: "), error
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_a_missing_device_says_what_to_use_instead() -> None:
    config = load_recipe("digits", ["trainer.accelerator=tpu"]).config
    with pytest.raises(ConfigError, match=r"torch finds no TPU \(through torch_xla\) on this "):
        check_devices(config.trainer)
    check_devices(load_recipe("digits", ["trainer.accelerator=cpu"]).config.trainer)
    check_devices(load_recipe("digits", ["trainer.accelerator=auto"]).config.trainer)


@pytest.mark.parametrize(
    ("devices", "error"),
    [
        ("3", "trainer.devices=3: this machine has 2 CUDA GPU(s); use at most 2, or -1 for all"),
        ("[0,2]", "trainer.devices=[0, 2]: this machine has 2 CUDA GPU(s), indices 0 to 1, so 2"),
        ("2", None),
        ("[1]", None),
        ("-1", None),
        ("auto", None),
    ],
)
@pytest.mark.parametrize("accelerator", ["cuda", "gpu", "auto"])
def test_more_gpus_than_the_machine_has_are_refused_before_the_run(
    accelerator: str, devices: str, error: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a machine with two CUDA GPUs (what torch would report there: this one has none), a
    third one, by count or by index, is refused before the run (Lightning refuses it once the
    MLflow run is open)."""
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: True))
    monkeypatch.setattr(CUDAAccelerator, "auto_device_count", staticmethod(lambda: 2))
    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: False))
    overrides = [f"trainer.accelerator={accelerator}", f"trainer.devices={devices}"]
    trainer = load_recipe("digits", overrides).config.trainer
    if error is None:
        check_devices(trainer)
    else:
        with pytest.raises(ConfigError, match=re.escape(error)):
            check_devices(trainer)
