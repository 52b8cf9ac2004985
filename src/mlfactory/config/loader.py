"""Compose a recipe from packaged (or user) Hydra YAML plus command-line overrides.

The typed schema (`schema.RecipeConfig`) is registered in Hydra's ConfigStore and every recipe
starts its defaults list with it, so composition itself rejects wrongly typed values. Before
composing, override keys are checked against the schema (with a "did you mean"), and a user's
YAML file is read once with a plain YAML parser that refuses aliases, so a malformed file or an
alias bomb is one line with its position. After composing, every value is checked against its
declared rule and the modality's preprocessing (`constraints.check_dataclass`). Errors are
`ConfigError`s with a one-line message naming the key.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlfactory.config.composition_errors import (
    check_recipe_keys,
    composition_error,
    defaults_of,
)
from mlfactory.config.constraints import check_dataclass
from mlfactory.config.schema import MISSING, RecipeConfig, schema_type
from mlfactory.errors import ConfigError
from mlfactory.modalities import get_modality

RECIPES_DIR = Path(__file__).parent / "recipes"
SCHEMA_NAME = "recipe_schema"
# Hydra's override grammar gives these characters a meaning; a path holding one is quoted.
_HYDRA_SPECIAL = set("~'\"\\ ()[]{},=:$*?!<>|&;#%@`^")
# Suffixes left out of a model name derived from a data file.
_DATA_SUFFIXES = {".csv", ".tsv", ".jsonl", ".ndjson", ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz"}


@dataclass
class Recipe:
    """A composed, validated recipe: the typed config and its plain-dict form.

    Attributes:
        config: the typed recipe.
        resolved: the same as plain data (stored in `bundle.json` and `run.json`).
        reference: the packaged name, YAML path or bundle target it was composed from ("" if
            from a dict).
        overrides: the command-line overrides it was composed with.
    """

    config: RecipeConfig
    resolved: dict[str, Any]
    reference: str = ""
    overrides: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name


def list_recipes() -> list[str]:
    """Names of the recipes shipped with the package."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def seed_recipes() -> list[str]:
    """The packaged recipes that bring their own (offline) data: all but image, text, audio."""
    return [name for name, info in describe_recipes().items() if info["own_data"] == "no"]


def describe_recipes() -> dict[str, dict[str, str]]:
    """Modality, backbone, default data source and description of each packaged recipe.

    Read from the YAML files as written, so the generic recipes (no default data) list too;
    they come first.
    """
    import yaml

    described = {}
    for name in list_recipes():
        raw = yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
        source = raw.get("data", {}).get("source", MISSING)
        described[name] = {
            "modality": str(raw.get("modality", "")),
            "backbone": str(raw.get("model", {}).get("backbone", "")),
            "source": "(your data: data.source=...)" if source == MISSING else str(source),
            "description": str(raw.get("description", "")),
            "own_data": "yes" if source == MISSING else "no",  # the user's data is required
        }
    # The recipes for your own data first, then the seeds.
    return dict(sorted(described.items(), key=lambda item: (item[1]["own_data"] != "yes", item[0])))


def seed_recipe_note(recipe: Recipe) -> str | None:
    """A note when a packaged seed recipe trains on other data than its own, else None.

    The model then keeps the seed's name and description (in MLflow, `/v1/model`, the API
    docs) and its class limits; the note says so and names the way out.
    """
    seed = describe_recipes().get(recipe.reference)
    if seed is None or seed["own_data"] == "yes" or recipe.config.data.source == seed["source"]:
        return None
    if any(override.lstrip("+").startswith("name=") for override in recipe.overrides):
        return None
    return (
        f"note: the seed recipe '{recipe.reference}' on your data: the model is named "
        f"'{recipe.name}' and keeps the seed's settings; name=... renames it, and the "
        f"'{recipe.config.modality}' recipe is made for your own data"
    )


def _register_schema() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=RecipeConfig)


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """Compose a recipe by packaged name, YAML path or bundle, apply overrides and validate it.

    Args:
        name_or_path: a packaged recipe name (see `list_recipes`), a path to a YAML file whose
            defaults list starts with `recipe_schema`, or a bundle target (`targets`) whose
            stored recipe is composed again (`bundle_recipe.stored_recipe_file`).
        overrides: Hydra override strings such as `trainer.max_epochs=3`.

    Raises:
        ConfigError: unknown recipe, malformed recipe file, unknown key, a value of the wrong
            type or outside what its key allows.
    """
    # Names and keys are checked before Hydra is imported: a typo is refused at once.
    prepared = [_prepare_override(override) for override in overrides or []]
    with _located(name_or_path) as (config_dir, config_name):
        composed = _compose(config_dir, config_name, prepared)
    from omegaconf import OmegaConf

    validate(composed)
    resolved = OmegaConf.to_container(OmegaConf.structured(composed), resolve=True)
    assert isinstance(resolved, dict)
    return Recipe(composed, resolved, name_or_path, list(overrides or []))  # type: ignore[arg-type]


def _compose(config_dir: Path, config_name: str, overrides: list[str]) -> RecipeConfig:
    """The typed recipe Hydra composes from `config_name` in `config_dir` with `overrides`."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _register_schema()
    packaged = config_dir == RECIPES_DIR
    # A recipe file may start from a packaged recipe: `defaults: [mushrooms, _self_]`.
    search = [] if packaged else [f"hydra.searchpath=[{RECIPES_DIR.as_uri()}]"]
    recipe_file = "" if packaged else str(config_dir / f"{config_name}.yaml")
    try:
        with (
            initialize_config_dir(config_dir=str(config_dir), version_base=None),
            warnings.catch_warnings(),
        ):
            # Without `_self_` the file's own values come last, as intended: no chatter.
            warnings.filterwarnings("ignore", "In '.*': Defaults list is missing `_self_`")
            composed = compose(config_name=config_name, overrides=[*search, *overrides])
        _fill_required(composed)
        typed = OmegaConf.merge(OmegaConf.structured(RecipeConfig), composed)
        config: RecipeConfig = OmegaConf.to_object(typed)  # type: ignore[assignment]
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(composition_error(exc, recipe_file, list_recipes())) from None
    return config


def _fill_required(composed: Any) -> None:
    """A generic recipe leaves `data.source` (and `name`) to the user (`???` in its YAML).

    Raises:
        ConfigError: `data.source` is not given.
    """
    from omegaconf import OmegaConf

    if OmegaConf.is_missing(composed.data, "source"):
        raise ConfigError(
            "data.source: this recipe trains on your data: add data.source=/path/to/folder "
            "(one sub-folder per class), or a .csv/.tsv/.jsonl file of texts"
        )
    composed.data.source = absolute_source(str(composed.data.source))
    if OmegaConf.is_missing(composed, "name"):
        composed.name = derived_name(str(composed.data.source))


def absolute_source(source: str) -> str:
    """A local data source as an absolute path (`~` expanded), resolved against the current
    folder: what the run, its `run.json`, its MLflow params and its bundle record then names
    the same data from any folder. A scheme (`dvc:`, `hf:`, `mlxtend:`, a URL, a bucket) is
    left as it is, and so is an empty source (refused later, by the data step)."""
    if not source or re.match(r"^[A-Za-z][\w.+-]+:", source):  # a drive letter is one letter
        return source
    return os.path.abspath(os.path.expanduser(source))


def derived_name(source: str) -> str:
    """A model name from a data source: its folder or file name, or the name in a scheme.

    `/data/animals` gives `animals`, `~/texts/descriptions.csv` gives `descriptions`,
    `kaggle:owner/mushrooms` gives `mushrooms`, `hf:imdb:train` gives `imdb`.
    """
    scheme = re.match(r"^[A-Za-z][\w+.-]+:(?!//)(.*)$", source)  # a drive letter is one letter
    text = scheme.group(1).split(":")[0] if scheme else source.split("#")[0]
    last = re.split(r"[/\\]", text.rstrip("/\\"))[-1]
    while Path(last).suffix.lower() in _DATA_SUFFIXES:
        last = last[: -len(Path(last).suffix)]
    return re.sub(r"[^\w.-]+", "-", last).strip("-.") or "model"


def load_recipe_from_dict(resolved: dict[str, Any]) -> Recipe:
    """Rebuild a recipe from its resolved form (as stored in a bundle's `config`)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        typed = OmegaConf.merge(OmegaConf.structured(RecipeConfig), resolved)
        config: RecipeConfig = OmegaConf.to_object(typed)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"stored recipe is invalid: {composition_error(exc)}") from None
    validate(config)
    return Recipe(config=config, resolved=resolved)


def preprocessing_params(config: RecipeConfig) -> dict[str, Any]:
    """The recipe's preprocessing section, checked, with the modality's defaults filled in."""
    return get_modality(config.modality).preprocessing(config.preprocess)


def validate(config: RecipeConfig) -> None:
    """Check every value of a recipe against its rule, and the modality's preprocessing.

    Raises:
        ConfigError: the first value that is not allowed, naming its key.
    """
    check_dataclass(config)
    preprocessing_params(config)


@contextmanager
def _located(name_or_path: str) -> Iterator[tuple[Path, str]]:
    """The config folder and name of a packaged recipe, a user's YAML file (checked), or the
    recipe stored in a bundle (`bundle_recipe.stored_recipe_file`, removed on exit)."""
    from mlfactory.targets import names_a_bundle

    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in {".yaml", ".yml"}:
        if not candidate.is_file():
            raise ConfigError(f"recipe file not found: {name_or_path}")
        check_recipe_file(candidate)
        yield candidate.resolve().parent, candidate.stem
    elif name_or_path in list_recipes():
        yield RECIPES_DIR, name_or_path
    elif names_a_bundle(name_or_path):
        from mlfactory.bundle_recipe import stored_recipe_file

        with stored_recipe_file(name_or_path, SCHEMA_NAME) as path:
            yield path.parent, path.stem
    else:
        known = ", ".join(list_recipes())
        close = difflib.get_close_matches(name_or_path, list_recipes(), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"unknown recipe '{name_or_path}' (known: {known}, a .yaml path, or a bundle to "
            f"train again: its folder, run folder, MLflow run id or models:/NAME@ALIAS){hint}"
        )


def check_recipe_file(path: Path) -> None:
    """Refuse a recipe file that is empty, not YAML, not a mapping, uses YAML aliases, has a
    duplicate or unknown key (`composition_errors.check_recipe_keys`), or whose defaults list
    leads back to itself; the recipe files it starts from are checked alike.

    The file is parsed event by event, never expanded, so an alias bomb costs nothing.

    Raises:
        ConfigError: one line with the file, the line and column, and what is wrong.
    """
    _check_recipe_text(path)
    _check_defaults_chain(path)


def _check_recipe_text(path: Path) -> None:
    """`check_recipe_file` for one file, its defaults list left unfollowed."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the recipe file: {exc}") from None
    try:
        events = list(yaml.parse(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}") from None
    for event in events:
        if isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1
            raise ConfigError(
                f"{path}:{line}: YAML aliases (*{event.anchor}) are not allowed in recipes: "
                "write the value out"
            )
    starts = [event for event in events if isinstance(event, yaml.NodeEvent)]
    if not starts:
        raise ConfigError(f"{path}: the recipe file is empty: see docs/configuration.md")
    if not isinstance(starts[0], yaml.MappingStartEvent):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys to values")
    check_recipe_keys(path, yaml.compose(text, Loader=yaml.SafeLoader))


def _check_defaults_chain(path: Path, chain: tuple[str, ...] = (), top: Path | None = None) -> None:
    """Refuse a recipe file whose defaults list leads back to itself (Hydra would recurse).

    An entry is looked up beside the file first, then among the packaged recipes (which
    name only the schema), so only the files of the folder can form a circle.

    Raises:
        ConfigError: the file, the circle and how to break it.
    """
    chain = (*chain, path.stem)
    for name in defaults_of(path) or []:
        if name in chain:
            if len(chain) == 1:
                packaged = " (a file beside it comes before the packaged recipe)"
                raise ConfigError(
                    f"{path}: its defaults list names '{name}', which is this file itself"
                    f"{packaged if name in list_recipes() else ''}: rename the file, "
                    f"e.g. my-{name}.yaml"
                )
            circle = " -> ".join((*chain[chain.index(name) :], name))
            raise ConfigError(
                f"{top or path}: the defaults lists of the recipe files go round in a circle "
                f"({circle}): remove one of these entries, or rename the file that should "
                "start from a packaged recipe"
            )
        sibling = path.parent / f"{name}.yaml"
        if sibling.is_file():
            _check_recipe_text(sibling)
            _check_defaults_chain(sibling, chain, top or path)


def _prepare_override(override: str) -> str:
    """Check an override's key against the schema and quote a string value Hydra would parse.

    Raises:
        ConfigError: the key is unknown (with the closest known key), or names a section.
    """
    key, sep, value = override.partition("=")
    if not sep and not key.startswith("~"):
        raise ConfigError(f"{override}: an override is KEY=VALUE, e.g. trainer.max_epochs=3")
    bare = key.lstrip("+~")
    kind = schema_type(bare) if sep else None
    if sep and kind is None and not key.startswith(("+", "~")):
        # A key inside a free-form section (preprocess, model.extra) may be absent from the
        # recipe file: add or set it; the section's own check refuses unknown keys.
        key = f"++{key}"
        override = f"{key}={value}"
    quotable = sep and kind is str and value and not _is_quoted(value) and value != "null"
    if quotable and set(value) & _HYDRA_SPECIAL:
        return f"{key}={_quote(value)}"
    return override


def _is_quoted(value: str) -> bool:
    return len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""


def _quote(value: str) -> str:
    """A Hydra quoted string holding exactly `value`.

    In Hydra's grammar a backslash escapes only a quote or a backslash run that ends the
    string or precedes a quote; elsewhere it is literal (Windows paths stay as typed).
    """
    doubled = re.sub(r"(\\+)(?='|$)", lambda run: run.group(1) * 2, value)
    return "'" + doubled.replace("'", "\\'") + "'"
