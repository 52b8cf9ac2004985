"""Hydra's and OmegaConf's refusals of a recipe, as one line that names the key and the fix."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mlfactory.config.schema import schema_type
from mlfactory.errors import ConfigError

# OmegaConf's message for a value of the wrong type.
_NOT_CONVERTED = re.compile(
    r"Value '(.*)' (?:of type '\w+' could not be converted to (\w+)|is not a valid (bool))"
)
# Hydra's message for a defaults entry it cannot find.
_NOT_LOADED = re.compile(r"^In '[^']*': Could not load '([^']*)'")


def composition_error(
    exc: BaseException, recipe_file: str = "", recipes: Sequence[str] = ()
) -> str:
    """Hydra's or OmegaConf's refusal as one line: the key and what is wrong with its value,
    or the defaults entry of `recipe_file` that is neither beside it nor among `recipes` (the
    packaged ones); otherwise the informative lines of the message, joined."""
    from omegaconf.errors import (
        InterpolationResolutionError,
        MissingMandatoryValue,
        ValidationError,
    )

    untyped = _untyped_override(exc, recipe_file)
    if untyped:
        return untyped
    if isinstance(exc, InterpolationResolutionError) and getattr(exc, "full_key", None):
        return _unresolved(str(exc.full_key), exc)
    if isinstance(exc, MissingMandatoryValue) and getattr(exc, "full_key", None):
        return f"{exc.full_key}: no value given: add {exc.full_key}=..."
    undeletable = _undeletable(exc)
    if undeletable:
        return undeletable
    # Hydra wraps OmegaConf's error in its own, or raises its own while handling it (a value
    # of a recipe file rather than of an override).
    cause = next((e for e in _chain(exc) if isinstance(e, ValidationError)), None)
    key = getattr(cause, "full_key", None)
    converted = _NOT_CONVERTED.match(str(cause)) if cause is not None else None
    if key and converted:
        value, kind = converted.group(1), converted.group(2) or converted.group(3)
        expected = {"Integer": "an integer", "Float": "a number", "bool": "true or false"}
        return f"{key}: {value!r} is not {expected.get(kind, kind.lower())}"
    if key and cause is not None:
        return _assignment_problem(str(key), str(cause))
    missing = _NOT_LOADED.match(str(exc))
    if missing and recipe_file:
        return (
            f"{recipe_file}: its defaults list names '{missing.group(1)}', which is neither a "
            f"recipe file beside it nor a packaged recipe ({', '.join(recipes)})"
        )
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    kept = [
        line
        for line in lines
        if not line.startswith(("full_key:", "object_type=", "reference_type=", "To append"))
        and "HYDRA_FULL_ERROR" not in line
        and not line.startswith("See https://")
    ]
    return " ".join(kept) or type(exc).__name__


def _assignment_problem(key: str, problem: str) -> str:
    """OmegaConf's refusal of a value for `key` (`trainer=5`, `trainer.lr=null`), in words."""
    kind = schema_type(key)
    if dataclasses.is_dataclass(kind) or typing.get_origin(kind) is dict:
        fields = dataclasses.fields(kind) if dataclasses.is_dataclass(kind) else ()
        example = f"{key}.{fields[0].name}=..." if fields else f"{key}.NAME=VALUE"
        return f"{key} is a section of settings, not a value: set a key inside it, e.g. {example}"
    if "is not Optional" in problem:
        return f"{key}: null is not allowed: give a value, or leave {key} out to keep the recipe's"
    return f"{key}: {problem.splitlines()[0]}"


def check_recipe_keys(path: object, root: Any, prefix: str = "", typed: bool = True) -> None:
    """Refuse a recipe file's duplicate key, unknown key or value given for a section.

    `root` is the file's YAML node graph (`yaml.compose`, aliases already refused); keys
    inside a free-form section (`preprocess`, `model.extra`) are checked later, by the
    modality or the backbone.

    Raises:
        ConfigError: `file:line: key: what is wrong`, worded as for an override.
    """
    import yaml

    seen: dict[str, int] = {}
    for key_node, value_node in root.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        key, line = f"{prefix}{key_node.value}", key_node.start_mark.line + 1
        where = f"{path}:{line}"
        if key in seen:
            raise ConfigError(
                f"{where}: duplicate key {key} (first set on line {seen[key]}): keep one of them"
            )
        seen[key] = line
        kind: Any = None
        if typed and key not in ("defaults", "hydra"):
            try:
                kind = schema_type(key)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        is_section = dataclasses.is_dataclass(kind)
        if is_section and not isinstance(value_node, yaml.MappingNode):
            fields = dataclasses.fields(kind)
            raise ConfigError(
                f"{where}: {key} is a section of settings, not a value: set a key inside it, "
                f"e.g. {key}: {{{fields[0].name}: ...}}"
            )
        if isinstance(value_node, yaml.MappingNode):
            check_recipe_keys(path, value_node, f"{key}.", typed and is_section)


def defaults_of(path: Path) -> list[str] | None:
    """The names in a recipe file's defaults list (None without one, or if unreadable)."""
    import yaml

    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    for key, value in root.value:
        if getattr(key, "value", None) == "defaults" and isinstance(value, yaml.SequenceNode):
            names = [item.value for item in value.value if isinstance(item, yaml.ScalarNode)]
            return [name.strip("/").removesuffix(".yaml") for name in names]
    return None


def _undeletable(exc: BaseException) -> str | None:
    """Why `~KEY` of a key every recipe has fails: a key of the schema cannot be deleted."""
    for cause in _chain(exc):
        key = getattr(cause, "full_key", None)
        if key and "does not support deletion" in str(cause):
            return (
                f"~{key}: {key} cannot be deleted, every recipe has it: set it instead "
                f"({key}=...), or leave it out to keep the recipe's value"
            )
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it was raised from or while handling, each once (a chain of contexts
    can lead back to an exception already seen)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


def _unresolved(key: str, exc: BaseException) -> str:
    """`${...}` in the value of `key` cannot be resolved: the innermost reason, and for an
    environment variable that is not set, how to give one."""
    reason = str(exc).split(": ", 1)[-1].strip('"')
    unset = re.match(r"Environment variable '([^']+)' not found", reason)
    if unset:
        name = unset.group(1)
        return (
            f"{key}: the environment variable {name} is not set: set it, or give a default "
            f"(${{oc.env:{name},...}})"
        )
    return f"{key}: its ${{...}} cannot be resolved: {reason}"


def _untyped_override(exc: BaseException, recipe_file: str) -> str | None:
    """Why an override of a key a recipe file without a defaults list leaves out fails."""
    refused = re.match(r"Could not override '([^']+)'", str(exc))
    if not refused or not recipe_file or defaults_of(Path(recipe_file)) is not None:
        return None
    return (
        f"{refused.group(1)}: {recipe_file} has no defaults list, so only the keys it sets can "
        "be overridden: start it with `defaults: [recipe_schema, _self_]` (see "
        "docs/configuration.md) or from a packaged recipe, e.g. `defaults: [image, _self_]`"
    )
