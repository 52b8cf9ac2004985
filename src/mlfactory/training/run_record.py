"""What a run records about the code that trained it and about its resumes (MLflow tags and
`run.json`): mlfactory's and the key libraries' versions, the user's project commit, and each
`--resume` (when, after how many epochs, and which recipe keys it changed)."""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mlfactory import tracking
from mlfactory.config.loader import Recipe
from mlfactory.training.float_kernels import float_kernels
from mlfactory.training.stored_recipe import changed_keys

# The libraries whose version changes what is trained or exported.
LIBRARIES = ("torch", "lightning", "timm", "transformers", "onnxruntime", "numpy")


def code_versions() -> dict[str, str]:
    """mlfactory's version and those of `LIBRARIES` ("not installed" for one that is not)."""
    found = {}
    for name in ("mlfactory", *LIBRARIES):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def recipe_files(recipe: Recipe) -> list[Path]:
    """The recipe's YAML file, when it was given as one (not a packaged name or a bundle)."""
    path = Path(recipe.reference).expanduser() if recipe.reference else None
    return [path] if path is not None and path.suffix in {".yaml", ".yml"} else []


def code_record(recipe: Recipe) -> dict[str, Any]:
    """The code of this process: versions, the project's commit (cwd; `tracking.git_commit`,
    dirty too when the recipe file is untracked), and the float kernels and threads."""
    return {
        "versions": code_versions(),
        "git_commit": tracking.git_commit(recipe_files(recipe)),
        "float_kernels": float_kernels(),
    }


def code_tags(code: dict[str, Any]) -> dict[str, str]:
    """`code_record` as MLflow tags: `mlfactory_version`, `library_versions`, `git_commit`
    ("none" outside a git checkout) and `float_kernels`."""
    versions = dict(code["versions"])
    return {
        "mlfactory_version": versions.pop("mlfactory"),
        "library_versions": ", ".join(f"{name} {v}" for name, v in versions.items()),
        "git_commit": code["git_commit"] or "none",
        "float_kernels": code["float_kernels"],
    }


def resume_entry(
    state: dict[str, Any], recipe: Recipe, trained_epochs: int, code: dict[str, Any]
) -> dict[str, Any]:
    """One resume, as `run.json`'s `resumes` keeps it: when, after how many trained epochs,
    what it changed in the recipe the run started with (`key=value`), and its code."""
    started = state.get("started_recipe", state["recipe"])
    resolved = tracking.flatten(tracking.without_secrets(recipe.resolved))
    changed = [
        f"{key}={resolved.get(key)}"
        for key in changed_keys(started, tracking.without_secrets(recipe.resolved))
    ]
    return {
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "after_epochs": trained_epochs,
        "changed": changed,
        **code,
    }


def resume_tags(state: dict[str, Any], resumes: list[dict[str, Any]]) -> dict[str, str]:
    """The MLflow tags of a resumed run: `resumed` (how many times), `resumed_after_epochs`
    (the epochs trained before each), `resumed_with` (the recipe keys changed since the start,
    whose params MLflow keeps as first logged), and `resumed_float_kernels` when the last
    resume computes with other kernels or threads than the run started with."""
    last = resumes[-1]
    tags = {
        "resumed": str(len(resumes)),
        "resumed_after_epochs": ",".join(str(entry["after_epochs"]) for entry in resumes),
    }
    if last["changed"]:
        tags["resumed_with"] = " ".join(last["changed"])
    if last["float_kernels"] != state.get("code", {}).get("float_kernels", last["float_kernels"]):
        tags["resumed_float_kernels"] = last["float_kernels"]
    return tags
