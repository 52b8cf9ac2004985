"""`mlfactory sweep`: the study's trials as a table, best first, and what to do with the best."""

from __future__ import annotations

from rich.table import Table

from mlfactory.training.sweep import SweepResult, TrialOutcome

SHOWN = 20


def trials_table(result: SweepResult) -> Table:
    """Finished trials best first, then pruned and failed ones; at most `SHOWN` rows."""
    keys = sorted({key for trial in result.trials for key in trial.params})
    table = Table("trial", "state", *keys, result.metric, "MLflow run", title=_title(result))
    sign = 1 if result.direction == "minimize" else -1
    order = sorted(result.trials, key=lambda t: _rank(t, sign))
    for trial in order[:SHOWN]:
        value = "" if trial.value is None else f"{trial.value:.4f}"
        note = trial.error or ""
        table.add_row(
            str(trial.number),
            trial.state.lower() + (f": {note}" if note else ""),
            *(_format(trial.params.get(key)) for key in keys),
            value,
            trial.run_id or "",
        )
    return table


def _rank(trial: TrialOutcome, sign: int) -> tuple[int, float, int]:
    if trial.state == "COMPLETE" and trial.value is not None:
        return (0, sign * trial.value, trial.number)
    return (1 if trial.state == "PRUNED" else 2, 0.0, trial.number)


def _title(result: SweepResult) -> str:
    counts: dict[str, int] = {}
    for trial in result.trials:
        counts[trial.state.lower()] = counts.get(trial.state.lower(), 0) + 1
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return f"study '{result.study}' ({result.storage}): {states}; {result.ran} run now"


def _format(value: object) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if isinstance(value, float) else str(value)
