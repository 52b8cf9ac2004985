"""`mlfactory sweep` on real digits: a trial its data refuses fails and the sweep goes on; a
study keeps its own trial folders and its own settings across calls."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from typer.testing import CliRunner

from mlfactory.bundle import load_bundle
from mlfactory.cli import app

from ..conftest import SMALL_NETWORK, fast_digits_overrides
from ..test_cli import assert_one_line_error

runner = CliRunner()
LR = "trainer.lr=choice(0.0003,0.003)"


def one_epoch(digit_folder: Path, workdir: Path) -> list[str]:
    return [*fast_digits_overrides(digit_folder, workdir, epochs=1), *SMALL_NETWORK]


def test_a_trial_its_data_refuses_fails_and_the_sweep_goes_on(
    digit_folder: Path, tmp_path: Path
) -> None:
    # Two items a class leave the validation split empty: a DataError for that trial only.
    args = [
        "sweep",
        "digits",
        *one_epoch(digit_folder, tmp_path),
        "data.max_per_class=choice(2,40)",
        "--trials",
        "3",
        "--no-prune",
        "--storage",
        f"sqlite:///{tmp_path / 'optuna.db'}",
        "--out",
        str(tmp_path / "runs"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="digits-sweep", storage=f"sqlite:///{tmp_path}/optuna.db")
    drawn = [t.params["data.max_per_class"] for t in study.trials]
    assert len(drawn) == 3 and 2 in drawn and 40 in drawn, drawn
    for trial in study.trials:
        if trial.params["data.max_per_class"] == 2:
            assert trial.state == optuna.trial.TrialState.FAIL
            assert "val split" in trial.user_attrs["error"]
            # under the table, why (the console may fold the line)
            assert f"trial {trial.number}: " in result.stderr
        else:
            assert trial.state == optuna.trial.TrialState.COMPLETE
    assert "best: trial" in result.stderr
    assert load_bundle(result.stdout.strip().splitlines()[-1]).meta.mlflow_run_id


def test_a_study_keeps_its_trial_folders_and_its_settings(
    digit_folder: Path, tmp_path: Path
) -> None:
    base = ["sweep", "digits", *one_epoch(digit_folder, tmp_path)]
    storage = ["--storage", f"sqlite:///{tmp_path / 'optuna.db'}"]
    out = ["--out", str(tmp_path / "runs")]
    first = runner.invoke(app, [*base, LR, *storage, *out, "--trials", "1", "--no-prune"])
    assert first.exit_code == 0, first.output
    bundle = Path(first.stdout.strip().splitlines()[-1])
    assert bundle == tmp_path / "runs" / "trial-0" / "bundle"
    run_id = load_bundle(bundle).meta.mlflow_run_id
    marker = json.loads((tmp_path / "runs" / "sweep.json").read_text())
    assert marker["study"] == "digits-sweep"

    # Another study, or the same name in another storage, would write its own trial-0 there.
    other_storage = ["--storage", f"sqlite:///{tmp_path / 'fresh.db'}"]
    for extra in (["--study", "other", *storage], other_storage):
        refused = runner.invoke(app, [*base, "trainer.lr=choice(0.05)", *out, *extra])
        assert_one_line_error(
            refused, f"--out {tmp_path / 'runs'} holds the trials of the study 'digits-sweep'"
        )
    assert load_bundle(bundle).meta.mlflow_run_id == run_id  # left as it was

    # The same study with other fixed overrides or another space would mix its trials.
    cases = {
        ("trainer.batch_size=16", LR): "fixed trainer.batch_size=16 (was 8)",
        ("trainer.lr=choice(0.05,0.5)",): (
            "space trainer.lr=choice(0.05,0.5) (was choice(0.0003,0.003))"
        ),
        (LR, "trainer.weight_decay=choice(0,0.1)"): (
            "space trainer.weight_decay=choice(0,0.1) (was (none))"
        ),
    }
    for extra, message in cases.items():
        refused = runner.invoke(app, [*base, *extra, *storage, *out])
        assert_one_line_error(refused, message)
        assert "use --study NAME to start another study" in refused.output
    study = optuna.load_study(study_name="digits-sweep", storage=storage[1])
    assert len(study.trials) == 1

    # The same study with the same settings adds its trials beside the first one's.
    again = runner.invoke(app, [*base, LR, *storage, *out, "--trials", "1", "--no-prune"])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "runs" / "trial-1" / "bundle").is_dir()
    assert load_bundle(bundle).meta.mlflow_run_id == run_id


def test_an_out_that_is_a_file_is_refused_before_the_study(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    args = ["sweep", "digits", LR, "--storage", f"sqlite:///{tmp_path / 'optuna.db'}"]
    result = runner.invoke(app, [*args, "--out", str(afile)])
    assert_one_line_error(result, f"--out {afile} is a file, not a folder")
    assert not (tmp_path / "optuna.db").exists()
