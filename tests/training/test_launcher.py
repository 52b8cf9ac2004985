"""`trainer.num_nodes` > 1 without a launcher is refused at once, not left waiting for the other
machines (the launched run itself: tests/training/test_ddp.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlfactory.cli import app
from mlfactory.errors import ConfigError
from mlfactory.training.launcher import RANK_VARIABLES, check_launched, owns_the_run
from tests.test_cli import assert_one_line_error

LAUNCHERS = [
    {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "GROUP_RANK": "1"},  # torchrun
    {"RANK": "0", "WORLD_SIZE": "8"},  # Kubeflow's PyTorchJob
    {"NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1"},  # a manual launch, as Lightning documents
    {"SLURM_NTASKS": "8", "SLURM_JOB_NAME": "train"},
    {"LSB_JOBID": "42"},
]


@pytest.mark.parametrize("environ", LAUNCHERS)
def test_a_launched_process_may_run_on_several_machines(environ: dict[str, str]) -> None:
    check_launched(2, environ)


def test_one_machine_needs_no_launcher() -> None:
    check_launched(1, {})


def test_several_machines_without_a_launcher_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="torchrun --nnodes=3"):
        check_launched(3, {"RANK": "0"})  # RANK alone is not a launch
    for names in ("RANK", "WORLD_SIZE", "NODE_RANK", "SLURM_NTASKS", "LSB_JOBID", "LOCAL_RANK"):
        monkeypatch.delenv(names, raising=False)
    args = ["train", "digits", "trainer.num_nodes=2", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, args)
    assert_one_line_error(result, "trainer.num_nodes=2: start this command on each of the 2")


RANKED = [
    {},
    {"LOCAL_RANK": "1"},  # Lightning's own DDP launcher, second process
    {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"},
    {"RANK": "3", "LOCAL_RANK": "0"},  # torchrun, first process of the second machine
    {"SLURM_PROCID": "0", "SLURM_NTASKS": "2"},
    {"SLURM_PROCID": "1", "SLURM_NTASKS": "2"},  # srun's second task
    {"LOCAL_RANK": "0", "SLURM_PROCID": "5"},  # SLURM allocation, Lightning's launcher inside
    {"JSM_NAMESPACE_RANK": "2", "LSB_JOBID": "42"},
]


@pytest.mark.parametrize("environ", RANKED)
def test_the_run_has_the_owner_lightning_starts_with(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_fabric.utilities.rank_zero import _get_rank

    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert owns_the_run(environ) == ((_get_rank() or 0) == 0)


def test_a_rank_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ConfigError, match="SLURM_PROCID='x': a process's rank must be a whole"):
        owns_the_run({"SLURM_PROCID": "x"})
