"""Compose a recipe from packaged (or user) Hydra YAML plus command-line overrides.

The typed schema (`schema.RecipeConfig`) is registered in Hydra's ConfigStore and every recipe
starts its defaults list with it, so composition itself rejects unknown keys and wrongly typed
values. Errors are re-raised as `ConfigError` with a one-line message naming the culprit.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mlfactory.config.schema import (
    LR_SCHEDULES,
    MODALITIES,
    PREPROCESSING_SCHEMAS,
    RecipeConfig,
    TrainerConfig,
)
from mlfactory.errors import ConfigError

RECIPES_DIR = Path(__file__).parent / "recipes"
SCHEMA_NAME = "recipe_schema"


@dataclass
class Recipe:
    """A composed, validated recipe: the typed config and its plain-dict form."""

    config: RecipeConfig
    resolved: dict[str, Any]

    @property
    def name(self) -> str:
        return self.config.name


def list_recipes() -> list[str]:
    """Names of the recipes shipped with the package."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def _register_schema() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=RecipeConfig)


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """Compose a recipe by packaged name or YAML path, apply overrides and validate it.

    Args:
        name_or_path: a packaged recipe name (see `list_recipes`) or a path to a YAML file whose
            defaults list starts with `recipe_schema`.
        overrides: Hydra override strings such as `trainer.max_epochs=3`.

    Raises:
        ConfigError: unknown recipe, unknown key or a value of the wrong type.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides or [])
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"}:
        if not candidate.is_file():
            raise ConfigError(f"recipe file not found: {name_or_path}")
        config_dir, config_name = candidate.resolve().parent, candidate.stem
    elif name_or_path in list_recipes():
        config_dir, config_name = RECIPES_DIR, name_or_path
    else:
        known = ", ".join(list_recipes())
        raise ConfigError(f"unknown recipe '{name_or_path}' (known: {known}, or a .yaml path)")

    _register_schema()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            composed = compose(config_name=config_name, overrides=overrides)
        typed = OmegaConf.merge(OmegaConf.structured(RecipeConfig), composed)
        config: RecipeConfig = OmegaConf.to_object(typed)  # type: ignore[assignment]
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(_one_line(exc)) from None

    _validate(config)
    resolved = OmegaConf.to_container(OmegaConf.structured(config), resolve=True)
    assert isinstance(resolved, dict)
    return Recipe(config=config, resolved=resolved)  # type: ignore[arg-type]


def load_recipe_from_dict(resolved: dict[str, Any]) -> Recipe:
    """Rebuild a recipe from its resolved form (as stored in a bundle's `config`)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        typed = OmegaConf.merge(OmegaConf.structured(RecipeConfig), resolved)
        config: RecipeConfig = OmegaConf.to_object(typed)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"stored recipe is invalid: {_one_line(exc)}") from None
    _validate(config)
    return Recipe(config=config, resolved=resolved)


def preprocessing_params(config: RecipeConfig) -> dict[str, Any]:
    """The recipe's preprocessing section with the modality's defaults filled in."""
    from dataclasses import asdict

    schema = PREPROCESSING_SCHEMAS[config.modality]
    return asdict(schema(**config.preprocess))


def _validate(config: RecipeConfig) -> None:
    if config.modality not in MODALITIES:
        raise ConfigError(f"modality: '{config.modality}' is not one of {', '.join(MODALITIES)}")
    schema = PREPROCESSING_SCHEMAS[config.modality]
    allowed = {f.name for f in fields(schema)}
    unknown = sorted(set(config.preprocess) - allowed)
    if unknown:
        raise ConfigError(
            f"preprocess.{unknown[0]}: unknown key for {config.modality} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    params = config.preprocess
    if config.modality == "image" and params.get("crop_size", 224) > params.get("resize_size", 235):
        raise ConfigError(
            f"preprocess.crop_size: {params.get('crop_size')} is larger than "
            f"preprocess.resize_size {params.get('resize_size')}"
        )
    for fraction_name in ("val_fraction", "test_fraction"):
        value = getattr(config.data, fraction_name)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"data.{fraction_name}: {value} is not in [0, 1)")
    if config.data.val_fraction + config.data.test_fraction >= 1.0:
        raise ConfigError("data.val_fraction + data.test_fraction must leave room for training")
    if config.trainer.max_epochs < 1:
        raise ConfigError(f"trainer.max_epochs: {config.trainer.max_epochs} must be >= 1")
    if config.trainer.batch_size < 1:
        raise ConfigError(f"trainer.batch_size: {config.trainer.batch_size} must be >= 1")
    if config.trainer.lr <= 0:
        raise ConfigError(f"trainer.lr: {config.trainer.lr} must be > 0")
    _validate_schedule(config.trainer)


def _validate_schedule(trainer: TrainerConfig) -> None:
    if trainer.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(
            f"trainer.lr_schedule: '{trainer.lr_schedule}' is not one of {', '.join(LR_SCHEDULES)}"
        )
    if trainer.lr_step_epochs < 1:
        raise ConfigError(f"trainer.lr_step_epochs: {trainer.lr_step_epochs} must be >= 1")
    if not 0.0 < trainer.lr_gamma <= 1.0:
        raise ConfigError(f"trainer.lr_gamma: {trainer.lr_gamma} is not in (0, 1]")


def _one_line(exc: BaseException) -> str:
    """Hydra/OmegaConf messages span several lines; keep the informative ones on one."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    kept = [
        line
        for line in lines
        if not line.startswith(("full_key:", "object_type=", "reference_type=", "To append"))
    ]
    return " ".join(kept) or type(exc).__name__
