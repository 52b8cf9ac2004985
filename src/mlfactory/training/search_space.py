"""A sweep's search space, written in Hydra's sweep syntax and turned into Optuna distributions.

The syntax and its meaning are those of Hydra's Optuna sweeper (`hydra-optuna-sweeper`):

| override | Optuna distribution |
|---|---|
| `trainer.batch_size=choice(16,32,64)` or `trainer.batch_size=16,32,64` | categorical |
| `trainer.max_epochs=range(3,10)`, `range(0.1,0.5,0.1)` | int (float) with a step |
| `trainer.lr=interval(1e-4,1e-2)` | float, uniform |
| `trainer.lr=tag(log,interval(1e-4,1e-2))` | float, log-uniform |

A range leaves its end out, as in Python. Any other override is fixed for every trial.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from mlfactory.errors import ConfigError, first_line

SWEEP_FUNCTION = re.compile(r"\s*(choice|range|interval|tag|shuffle|glob)\(")
EXAMPLE = "trainer.lr=tag(log,interval(1e-4,1e-2)) trainer.batch_size=choice(16,32)"


@dataclass(frozen=True)
class SearchSpace:
    """The overrides every trial shares, and the distribution of each swept key."""

    fixed: list[str]
    distributions: dict[str, Any]  # key -> optuna.distributions.BaseDistribution

    def fixed_settings(self) -> dict[str, str]:
        """The fixed overrides as key -> value: of a key given twice, the last (as a recipe
        takes them)."""
        return {key: value for key, _, value in (text.partition("=") for text in self.fixed)}

    def describe(self) -> dict[str, str]:
        """Each swept key and its distribution, as a short text (MLflow params, the table)."""
        return {key: _describe(dist) for key, dist in self.distributions.items()}

    def examples(self) -> list[str]:
        """One override per swept key at a value of its range, to check the keys before any
        trial trains."""
        return [f"{key}={hydra_value(_example(dist))}" for key, dist in self.distributions.items()]

    def variants(self) -> list[list[str]]:
        """`examples()`, then the same with each other value of each choice in its place: each
        value of a choice composed once, to check them all before any trial trains."""
        from optuna.distributions import CategoricalDistribution

        base = self.examples()
        variants = [base]
        for index, (key, dist) in enumerate(self.distributions.items()):
            if isinstance(dist, CategoricalDistribution):
                for choice in dist.choices[1:]:
                    variant = list(base)
                    variant[index] = f"{key}={hydra_value(choice)}"
                    variants.append(variant)
        return variants


def parse_search_space(overrides: list[str]) -> SearchSpace:
    """Split overrides into fixed ones and swept ones.

    Raises:
        ConfigError: an override Hydra cannot parse, or nothing to sweep.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    fixed: list[str] = []
    distributions: dict[str, Any] = {}
    parser = OverridesParser.create()
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException as exc:
            if not SWEEP_FUNCTION.match(text.partition("=")[2]):
                fixed.append(text)  # a plain value Hydra needs quoted: the recipe loader does it
                continue
            raise ConfigError(_parse_problem(text, exc)) from None
        if not override.is_sweep_override():
            fixed.append(text)
            continue
        if override.key_or_group in distributions:
            raise ConfigError(f"{override.key_or_group} is swept twice: give it one range")
        distributions[override.key_or_group] = _distribution(override, text)
    if not distributions:
        raise ConfigError(f"nothing to sweep: give at least one key a range, e.g. {EXAMPLE}")
    return SearchSpace(fixed, distributions)


def _parse_problem(text: str, exc: Exception) -> str:
    """Hydra's reason past its "Error parsing override" line; null in choice() named."""
    key, _, value = text.partition("=")
    value = value.strip()
    if "NoneType is incompatible" in str(exc) and value.startswith("choice("):
        plain = value.removeprefix("choice(").removesuffix(")")
        return (
            f"{text}: Hydra's choice() cannot hold null; list the values without it: {key}={plain}"
        )
    reasons = [
        line.strip()
        for line in str(exc).splitlines()
        if line.strip() and not line.startswith(("Error parsing override", "See https://"))
    ]
    return f"{text}: {reasons[0] if reasons else first_line(exc)}"


def _distribution(override: Any, text: str) -> Any:
    from hydra.core.override_parser.types import (
        ChoiceSweep,
        IntervalSweep,
        RangeSweep,
        Transformer,
    )
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        if any(not isinstance(c, str | int | float | bool | type(None)) for c in choices):
            raise ConfigError(f"{text}: choices must be numbers, strings, true/false or null")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        start, stop, step = (_number(v) for v in (value.start, value.stop, value.step))
        values = math.ceil(round((stop - start) / step, 9)) if step > 0 else 0
        if values < 1:
            raise ConfigError(f"{text}: the range is empty (its end is left out, as in Python)")
        if any(isinstance(v, float) for v in (start, stop, step)):
            return FloatDistribution(start, round(start + (values - 1) * step, 12), step=step)
        first, every = int(start), int(step)
        return IntDistribution(first, first + (values - 1) * every, step=every)
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        low, high = _number(value.start), _number(value.end)
        if low >= high or (log and low <= 0):
            raise ConfigError(
                f"{text}: an interval needs start < end" + (", both above 0 for log" if log else "")
            )
        return FloatDistribution(low, high, log=log)
    raise ConfigError(f"{text}: use choice(...), range(...) or interval(...), e.g. {EXAMPLE}")


def _number(value: float | None) -> float:
    if value is None:  # Hydra's grammar always gives both ends
        raise ConfigError("a range or interval needs both ends")
    return value


def _describe(dist: Any) -> str:
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return "choice(" + ",".join(str(c) for c in dist.choices) + ")"
    kind = "log " if dist.log else ""
    step = f" step {dist.step}" if dist.step not in (None, 1) else ""
    return f"{kind}{dist.low} to {dist.high}{step}"


def _example(dist: Any) -> Any:
    from optuna.distributions import CategoricalDistribution

    return dist.choices[0] if isinstance(dist, CategoricalDistribution) else dist.low


def hydra_value(value: Any) -> str:
    """A value of a range as Hydra reads it back in an override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)
