"""The recipe a resumed run continues with: the resolved recipe its `run.json` stored, plus the
overrides given with `--resume` (`compose_stored`), and how two resolved recipes differ
(`changed_keys`).

Nothing here imports torch or Lightning (the CLI checks a resume before loading them).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mlfactory.config.loader import SCHEMA_NAME, Recipe, load_recipe
from mlfactory.config.schema import RecipeConfig
from mlfactory.errors import ConfigError
from mlfactory.output import phase_log
from mlfactory.tracking import flatten, without_secrets


def compose_stored(state: dict[str, Any], reference: str, overrides: list[str]) -> Recipe:
    """`state["recipe"]` (what the run trained with so far) with `overrides` applied.

    The recipe file the run was started from is not needed: an edit made to it since is
    ignored, with a warning naming the keys (give them as overrides, `--resume` checks them).
    Where the file still composes to the stored recipe, it is used instead: it holds the
    credentials of URLs that `run.json` does not keep (`without_secrets`).

    Raises:
        ConfigError: an override is not a key of the recipe, or a value it does not allow.
    """
    stored, earlier = state["recipe"], list(state.get("overrides", []))
    before: Recipe | None
    from_file: Recipe | None
    try:
        before = load_recipe(reference, earlier)
        from_file = load_recipe(reference, [*earlier, *overrides])
    except ConfigError:  # the file moved or was removed: the stored recipe is all there is
        before = from_file = None
    if before is not None and from_file is not None:
        edited = changed_keys(stored, without_secrets(before.resolved))
        if not edited:
            return from_file
        phase_log.warning(
            "--resume: %s changed %s since the run started; the run continues with the "
            "recipe in its run.json (give a change as an override: key=value)",
            reference,
            ", ".join(edited),
        )
    with tempfile.TemporaryDirectory(prefix="mlfactory-resume-") as folder:
        path = Path(folder) / "recipe.yaml"
        path.write_text(_recipe_yaml(stored), encoding="utf-8")
        recipe = load_recipe(str(path), overrides)
    return Recipe(recipe.config, recipe.resolved, reference, recipe.overrides)


def _recipe_yaml(resolved: dict[str, Any]) -> str:
    """A resolved recipe as a recipe file on the schema's defaults."""
    import yaml

    return yaml.safe_dump({"defaults": [SCHEMA_NAME, "_self_"], **resolved}, sort_keys=False)


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Dotted keys whose value differs between two resolved recipes (added or removed too).

    A setting mlfactory gained after the run started is missing from `before`: it counts as
    unchanged while it has its default, which is how every new setting keeps the behaviour
    from before it existed.
    """
    old, new = flatten(before), flatten(after)
    defaults = setting_defaults()
    return sorted(
        key for key in old.keys() | new.keys() if old.get(key, defaults.get(key)) != new.get(key)
    )


def setting_defaults() -> dict[str, Any]:
    """Each setting's default as a dotted key (settings without one hold OmegaConf's "???")."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.to_container(OmegaConf.structured(RecipeConfig))
    assert isinstance(defaults, dict)
    return flatten(defaults)  # type: ignore[arg-type]
