"""`mlfactory sweep`: the study's trials as a table, best first, and what to do with the best."""

from __future__ import annotations

import shlex

from rich import box
from rich.table import Table

from mlfactory.tracking import without_secrets
from mlfactory.training.sweep import SweepResult, TrialOutcome

SHOWN = 20


def trials_table(result: SweepResult, width: int = 80) -> Table:
    """Finished trials best first, then pruned and failed ones; at most `SHOWN` rows, to fit
    `width` columns. A parameter's column is headed by the shortest ending of its key that
    tells it from the others (`learning_rate` for `model.learning_rate`); why a trial failed is
    said under the table; so are the MLflow run ids (what `register` takes, never cut) when
    their column would not fit."""
    sign = 1 if result.direction == "minimize" else -1
    order = sorted(result.trials, key=lambda t: _rank(t, sign))[:SHOWN]
    notes = [f"trial {t.number}: {t.error}" for t in order if t.error]
    table = _table(result, order, notes, with_runs=True)
    if _width(table) <= width:
        return table
    runs = [f"trial {t.number}: MLflow run {t.run_id}" for t in order if t.run_id]
    return _table(result, order, notes + runs, with_runs=False)


def _table(
    result: SweepResult, order: list[TrialOutcome], notes: list[str], with_runs: bool
) -> Table:
    keys = sorted({key for trial in result.trials for key in trial.params})
    table = Table(
        title=_title(result),
        caption="\n".join(notes) or None,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for header in ("trial", "state", *_headers(keys), result.metric):
        table.add_column(header, no_wrap=True)
    if with_runs:
        table.add_column("MLflow run", no_wrap=True, min_width=32)
    for trial in order:
        cells = [
            str(trial.number),
            trial.state.lower(),
            *(_format(trial.params.get(key)) for key in keys),
            "" if trial.value is None else f"{trial.value:.4f}",
        ]
        table.add_row(*cells, *([trial.run_id or ""] if with_runs else []))
    return table


def _width(table: Table) -> int:
    """Columns a table of unwrapped cells takes: each column's longest cell or header, with
    one space of padding either side and one between columns (`box.SIMPLE_HEAD`)."""
    widths = [
        max([len(str(column.header))] + [len(str(cell)) for cell in column.cells])
        for column in table.columns
    ]
    return sum(widths) + 3 * len(widths) + 1


def _headers(keys: list[str]) -> list[str]:
    """Each dotted key's shortest ending that no other key ends with (the whole key at most)."""
    headers = []
    for key in keys:
        parts = key.split(".")
        for start in range(len(parts) - 1, -1, -1):
            ending = ".".join(parts[start:])
            if not any(
                (other != key and other.endswith("." + ending)) or other == ending
                for other in keys
                if other != key
            ):
                break
        headers.append(ending)
    return headers


def _rank(trial: TrialOutcome, sign: int) -> tuple[int, float, int]:
    if trial.state == "COMPLETE" and trial.value is not None:
        return (0, sign * trial.value, trial.number)
    return (1 if trial.state == "PRUNED" else 2, 0.0, trial.number)


def _title(result: SweepResult) -> str:
    counts: dict[str, int] = {}
    for trial in result.trials:
        counts[trial.state.lower()] = counts.get(trial.state.lower(), 0) + 1
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return f"study '{result.study}' ({result.storage}): {states}; {result.ran} run by this worker"


def _format(value: object) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def register_hint(result: SweepResult) -> str:
    """The command that registers the best trial's bundle. `mlfactory register` looks its run
    up in MLFLOW_TRACKING_URI's store (or the default one): a sweep tracked elsewhere names its
    store, without its credentials (MLFLOW_TRACKING_PASSWORD or PGPASSWORD give them)."""
    from mlfactory.mlflow_store import tracking_uri

    assert result.best is not None and result.best.bundle is not None
    command = f"mlfactory register {shlex.quote(result.best.bundle)}"
    if result.tracking_uri == without_secrets(tracking_uri()):
        return command
    return f"MLFLOW_TRACKING_URI={shlex.quote(result.tracking_uri)} {command}"
