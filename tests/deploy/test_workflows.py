"""The GitHub workflows parse, and every `mlfactory` command they run exists with the options
they give it (a renamed option would otherwise break them only on GitHub)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from mlfactory.cli import app

WORKFLOWS = sorted((Path(__file__).parents[2] / ".github" / "workflows").glob("*.yml"))


def commands(workflow: dict[str, Any]) -> list[list[str]]:
    """Every `mlfactory ...` command line of the workflow's run steps, split as the shell would
    (continuation lines joined, ${VAR:+...} expansions taken as present)."""
    found = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            script = step.get("run", "").replace("\\\n", " ")
            for line in script.splitlines():
                line = re.sub(r"\$\{\w+:\+([^}]*)\}", r"\1", line.strip())
                if line.startswith("mlfactory "):
                    found.append(shlex.split(line)[1:])
    return found


def test_the_retrain_and_deploy_workflows_are_there() -> None:
    names = {path.name for path in WORKFLOWS}
    assert {"ci.yml", "retrain-on-data.yml", "deploy-champion.yml"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_mlfactory_commands_exist_with_their_options(path: Path) -> None:
    workflow = yaml.safe_load(path.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers, path
    group: Any = typer.main.get_command(app)
    for args in commands(workflow):
        command = group.commands.get(args[0])
        assert command is not None, f"{path.name}: no command mlfactory {args[0]}"
        options = {opt for param in command.params for opt in param.opts + param.secondary_opts}
        for arg in args[1:]:
            if arg.startswith("--"):
                assert arg.split("=")[0] in options, f"{path.name}: mlfactory {args[0]} {arg}"


def test_retraining_reads_the_pushed_commit_from_dvc() -> None:
    workflow = yaml.safe_load((WORKFLOWS[0].parent / "retrain-on-data.yml").read_text())
    assert workflow[True]["push"]["paths"] == ["**.dvc"]
    (train, register, compare) = commands(workflow)
    assert train[0] == "train" and "data.source=dvc:$DATA_PATH@$GITHUB_SHA" in train
    assert register[0] == "register" and register[-2:] == ["--alias", "challenger"]
    # the challenger against the champion, on the same items, for the promotion decision
    assert compare[:3] == ["compare", "models:/$name@champion", "runs/retrained"]
