"""The retraining workflow (.github/workflows/retrain-on-data.yml) as GitHub runs it: each of its
`run:` steps after the install, in bash, in a fresh clone of a repository whose real digits are
versioned with DVC (a local remote), with the workflow's variables set.

1. The first data version: trained, registered as the challenger; the compare step finds no
   champion (the workflow lets that step fail) and says so in one line.
2. The challenger is promoted, as a person would (`mlfactory register ... --alias champion`).
3. A second data version: trained on exactly that commit's data, registered as the challenger,
   and compared with the champion on the challenger's test split in the job's summary.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import SMALL_NETWORK, untraced_env, write_digit_folder
from tests.data.dvc_repos import dvc, dvc_site_cache, git  # noqa: F401  (the fixture)

pytest.importorskip("dvc")

WORKFLOW = Path(__file__).parents[2] / ".github" / "workflows" / "retrain-on-data.yml"
MODEL = "retrained-digits"


def small_recipe() -> dict[str, Any]:
    """The repository's own recipe (the workflow's RECIPE may be a path): the packaged demo
    recipe it starts from, with the suite's small network, one short epoch and small images."""
    model = dict(override.removeprefix("model.").split("=") for override in SMALL_NETWORK)
    return {
        "defaults": ["digits", "_self_"],
        "name": MODEL,
        "data": {"val_fraction": 0.2, "test_fraction": 0.2},
        "model": model,
        "trainer": {"max_epochs": 1, "batch_size": 8},
        "preprocess": {"resize_size": 32, "crop_size": 32},
    }


def workflow_steps() -> dict[str, str]:
    """The `run:` scripts of the train job after the install, by step name, in order."""
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["train"]["steps"]
    scripts = {step["name"]: step["run"] for step in steps if "run" in step}
    names = list(scripts)
    return {name: scripts[name] for name in names[names.index("install") + 1 :]}


def run_step(script: str, checkout: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script],  # GitHub's `shell: bash`
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def push_data_version(origin: Path, per_class: int) -> str:
    """data/digits with `per_class` real digits a class, added to DVC, committed and pushed."""
    write_digit_folder(origin / "data" / "digits", per_class)
    dvc("add", "-q", "data/digits", cwd=origin)
    git("add", "-A", cwd=origin)
    git("commit", "-q", "-m", f"digits, {per_class} a class", cwd=origin)
    dvc("push", "-q", cwd=origin)
    return git("rev-parse", "HEAD", cwd=origin)


def job_env(settings: dict[str, str], **more: str) -> dict[str, str]:
    """The job's environment: the workflow's variables, the installed `mlfactory` on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    extra = {"PATH": path, "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1"}
    return untraced_env({**settings, **extra, **more})


def run_workflow(
    origin: Path, sha: str, round_dir: Path, settings: dict[str, str]
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every step on a fresh clone at `sha` (no DVC cache, no data: only the remote has it)."""
    checkout = round_dir / "checkout"
    git("clone", "-q", str(origin), str(checkout), cwd=round_dir)
    git("checkout", "-q", sha, cwd=checkout)
    env = job_env(settings, GITHUB_SHA=sha, GITHUB_STEP_SUMMARY=str(round_dir / "summary.md"))
    return {name: run_step(script, checkout, env) for name, script in workflow_steps().items()}


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_new_data_trains_a_challenger_compared_with_the_champion(tmp_path: Path) -> None:
    for tool in ("git", "jq"):  # as on GitHub's ubuntu runners
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: install the Debian package '{tool}' (scripts/setup.sh)")
    origin, remote = tmp_path / "origin", tmp_path / "remote"
    origin.mkdir()
    git("init", "-q", "-b", "main", cwd=origin)
    dvc("init", "-q", cwd=origin)
    dvc("remote", "add", "-d", "local", str(remote), cwd=origin)
    recipe = origin / "recipes" / "digits-small.yaml"
    recipe.parent.mkdir()
    recipe.write_text(yaml.safe_dump(small_recipe(), sort_keys=False))
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    settings = {
        "RECIPE": "recipes/digits-small.yaml",
        "DATA_PATH": "data/digits",
        "MODEL_NAME": "",  # the bundle's name
        "MLFLOW_TRACKING_URI": store,
    }

    first_sha = push_data_version(origin, per_class=10)
    (tmp_path / "first").mkdir()
    first = run_workflow(origin, first_sha, tmp_path / "first", settings)
    train, register, compare = first.values()
    bundle_path = ok(train).strip().splitlines()[-1]
    assert bundle_path.endswith("runs/retrained/bundle")
    ok(register)
    first_data = f"dvc:data/digits@{first_sha}"
    assert registered_versions(store) == {"challenger": (1, first_data, first_data)}
    assert compare.returncode == 2, compare.stderr  # no champion yet: the job goes on
    no_champion = (
        f"error: models:/{MODEL}@champion: model '{MODEL}' has no alias 'champion' (its aliases: "
        f"challenger -> version 1; mlfactory register models:/{MODEL}/VERSION --alias champion "
        f"sets it) in {store}"
    )
    assert compare.stderr.strip().splitlines() == [no_champion]
    summary = (tmp_path / "first" / "summary.md").read_text()
    assert summary == f"```\n{no_champion}\n```\n"

    promote = f"mlfactory register models:/{MODEL}@challenger --alias champion"
    ok(run_step(promote, tmp_path, job_env(settings)))

    second_sha = push_data_version(origin, per_class=16)
    (tmp_path / "second").mkdir()
    second = run_workflow(origin, second_sha, tmp_path / "second", settings)
    train, register, compare = second.values()
    ok(train)
    ok(register)
    ok(compare)
    summary = (tmp_path / "second" / "summary.md").read_text()
    assert summary.startswith("```\n") and summary.rstrip().endswith("```")
    # the champion as its registered version names it, then its bundle's name and version
    assert re.search(rf"baseline +│ models:/{MODEL}/1 ", summary), summary
    assert f"({MODEL} 1)" in summary
    assert re.search(rf"candidate +│ {MODEL} 2 ", summary), summary
    assert f"the test split of {MODEL} 2's data (dvc:data/digits@{second_sha})" in summary
    assert "(exact McNemar test, p = " in summary

    second_data = f"dvc:data/digits@{second_sha}"
    assert registered_versions(store) == {
        "champion": (1, first_data, first_data),
        "challenger": (2, second_data, second_data),
    }


def registered_versions(store: str) -> dict[str, tuple[int, str, str]]:
    """Per alias of the model: its version, and the data source and version its run recorded."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    found = {}
    for alias, version in client.get_registered_model(MODEL).aliases.items():
        run = client.get_run(client.get_model_version(MODEL, version).run_id)
        found[alias] = (int(version), run.data.params["data.source"], run.data.tags["data_version"])
    return found
