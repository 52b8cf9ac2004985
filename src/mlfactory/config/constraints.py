"""What each recipe value may be, declared next to the field, and the one check that enforces it.

A field declared with `bounded(...)` or `one_of(...)` carries its rule in its metadata. The
check walks a dataclass (nested ones included), refuses a value of the wrong type or outside
its rule with one line naming the key and what is allowed, then runs the class's cross-field
rules (`cross_check`, when it has one). Recipes, a bundle's preprocessing and the tests that
walk every rule all read the same metadata.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlfactory.errors import ConfigError

RULE = "rule"


@dataclass(frozen=True)
class Rule:
    """The allowed values of one field: a numeric range, a set of choices, or both open."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None

    def describe(self) -> str:
        """What is allowed, as a user reads it, e.g. `>= 1` or `one of cosine, step`."""
        if self.choices is not None:
            return "one of " + ", ".join(
                "null" if choice is None else str(choice) for choice in self.choices
            )
        parts = []
        if self.ge is not None:
            parts.append(f">= {_number(self.ge)}")
        if self.gt is not None:
            parts.append(f"> {_number(self.gt)}")
        if self.le is not None:
            parts.append(f"<= {_number(self.le)}")
        if self.lt is not None:
            parts.append(f"< {_number(self.lt)}")
        return " and ".join(parts) or "any value"

    def allows(self, value: Any) -> bool:
        """True when `value` (already of the field's type) satisfies the rule."""
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )


def bounded(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field whose numeric value must lie in a range (`None` passes if allowed)."""
    return dataclasses.field(default=default, metadata={RULE: Rule(ge=ge, gt=gt, le=le, lt=lt)})


def one_of(default: Any, choices: Sequence[Any]) -> Any:
    """A dataclass field whose value must be one of `choices`."""
    return dataclasses.field(default=default, metadata={RULE: Rule(choices=tuple(choices))})


def check_dataclass(instance: Any, prefix: str = "") -> None:
    """Check every field of a dataclass instance (recursively), then its cross-field rules.

    Args:
        instance: a dataclass instance.
        prefix: how its keys are named in messages, e.g. `trainer.`.

    Raises:
        ConfigError: the first value of a wrong type or outside its rule, naming the key.
    """
    hints = typing.get_type_hints(type(instance))
    for spec in dataclasses.fields(instance):
        key, value = prefix + spec.name, getattr(instance, spec.name)
        if dataclasses.is_dataclass(value):
            check_dataclass(value, f"{key}.")
            continue
        check_type(key, value, hints[spec.name])
        rule: Rule | None = spec.metadata.get(RULE)
        if rule is not None and value is not None and not rule.allows(value):
            raise ConfigError(f"{key}: {value!r} is not allowed: use {rule.describe()}")
    cross_check = getattr(instance, "cross_check", None)
    if cross_check is not None:
        cross_check(prefix)


def from_mapping(cls: type, values: Mapping[str, Any] | None, prefix: str) -> Any:
    """An instance of dataclass `cls` from plain values (defaults filled), checked.

    Raises:
        ConfigError: `values` is not a mapping, has an unknown key, or a value is refused.
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"{prefix.rstrip('.')}: expected a mapping of keys to values, got "
            f"{type(values).__name__}"
        )
    allowed = [spec.name for spec in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key (allowed: {', '.join(sorted(allowed))})"
        )
    instance = cls(**dict(values))
    check_dataclass(instance, prefix)
    return instance


def rules(cls: type, prefix: str = "") -> dict[str, tuple[Rule, Any]]:
    """Every ruled field of a dataclass type, recursively: key -> (rule, declared type)."""
    found: dict[str, tuple[Rule, Any]] = {}
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        key, kind = prefix + spec.name, hints[spec.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            found.update(rules(kind, f"{key}."))
        elif RULE in spec.metadata:
            found[key] = (spec.metadata[RULE], kind)
    return found


def check_type(key: str, value: Any, kind: Any) -> None:
    """Refuse `value` unless it is of the declared type (`int` is not `bool`; ints are floats).

    Raises:
        ConfigError: naming the key, the value and the expected type.
    """
    if not _is_instance(value, kind):
        raise ConfigError(f"{key}: {value!r} is not {_type_name(kind)}")


def _is_instance(value: Any, kind: Any) -> bool:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(value, arg) for arg in args)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(_is_instance(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, kind)


def _type_name(kind: Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(arg) for arg in args if arg is not type(None)]
        optional = " or null" if type(None) in args else ""
        return " or ".join(names) + optional
    if origin is list:
        return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    plain = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return plain.get(kind, f"a {getattr(kind, '__name__', kind)}")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
