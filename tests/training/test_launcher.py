"""`trainer.num_nodes` > 1 without a launcher is refused at once, not left waiting for the other
machines (the launched run itself: tests/training/test_ddp.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlfactory.cli import app
from mlfactory.errors import ConfigError
from mlfactory.training.launcher import check_launched
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
