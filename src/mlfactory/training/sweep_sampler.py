"""The sweep's sampler: Optuna's TPE, seeded anew for each trial from the recipe's seed and the
trial's number.

The study's storage gives every trial its own number, whichever worker runs it, so workers
started together on a new study draw different values (one seed for all of them would have
each draw the same random start points), and one worker draws what it drew before with the
same seed: trial N of a study draws from `seed + N`, given the trials finished before it.
With several workers, which trials have finished when trial N draws depends on their timing:
the values are then different from worker to worker, not reproducible. While trials of other
workers run, TPE counts them as bad (`constant_liar`), so it does not draw near them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


class TrialSeededSampler(BaseSampler):
    """`TPESampler(seed=seed + trial.number, constant_liar=True)` for each trial."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._samplers: dict[int, TPESampler] = {}

    def _for(self, trial: FrozenTrial) -> TPESampler:
        sampler = self._samplers.get(trial.number)
        if sampler is None:
            sampler = TPESampler(seed=self._seed + trial.number, constant_liar=True)
            self._samplers[trial.number] = sampler
        return sampler

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        sampler = self._samplers.pop(trial.number, None) or self._for(trial)
        sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to reseed: each trial's sampler is seeded from its number."""
