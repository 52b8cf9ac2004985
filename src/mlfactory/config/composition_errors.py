"""Hydra's and OmegaConf's refusals of a recipe, as one line that names the key and the fix."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Sequence

from mlfactory.config.schema import schema_type

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
    from omegaconf.errors import MissingMandatoryValue, ValidationError

    if isinstance(exc, MissingMandatoryValue) and getattr(exc, "full_key", None):
        return f"{exc.full_key}: no value given: add {exc.full_key}=..."
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ValidationError):
        # Hydra wraps OmegaConf's error in its own, or raises its own while handling it (a
        # value of a recipe file rather than of an override).
        cause = cause.__cause__ or cause.__context__
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
