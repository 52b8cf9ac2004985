"""Where `mlfactory predict` writes its results: a CSV or JSON Lines file, or the terminal.

A results file is written row by row as predictions stream in, so it holds everything
predicted so far even if the run stops. One row per predicted input: `input` (its path, a table
row as `file:line`, `--text N` or `stdin:N`), `label`, `score`, then each label's probability
(CSV: `p_<label>` columns; JSON Lines: a `probabilities` object).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import IO, Protocol

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlfactory.batch_predict import Prediction, Skipped
from mlfactory.errors import InputError
from mlfactory.paths import is_within

RESULT_SUFFIXES = (".csv", ".jsonl", ".ndjson")
MAX_SKIPS_SHOWN = 100


class ResultWriter(Protocol):
    """Receives each prediction as it is made; `close` finishes the output."""

    def write(self, prediction: Prediction) -> None: ...

    def close(self) -> None: ...


class FileResults:
    """A results file: an error writing it (a full disk) names it, as one line (`InputError`:
    the results are not all there; no input was skipped)."""

    def __init__(self, handle: IO[str], path: Path) -> None:
        self.handle = handle
        self.path = path

    def write(self, prediction: Prediction) -> None:
        self.write_text(self.line(prediction))

    def line(self, prediction: Prediction) -> str:
        """The text of one prediction in the file."""
        raise NotImplementedError

    def write_text(self, text: str) -> None:
        """Write `text` to the file; an `OSError` becomes the `InputError` naming it."""
        try:
            self.handle.write(text)
        except OSError as exc:
            raise self.failed(exc) from None

    def close(self) -> None:
        try:
            self.handle.close()
        except OSError as exc:
            raise self.failed(exc) from None

    def failed(self, exc: OSError) -> InputError:
        return InputError(f"--output {self.path}: cannot write it: {exc.strerror or exc}")


class CsvResults(FileResults):
    """A CSV file: input, label, score, then `p_<label>` per label (in the bundle's order)."""

    def __init__(self, handle: IO[str], labels: list[str], path: Path) -> None:
        super().__init__(handle, path)
        self.labels = labels
        self.text = io.StringIO()
        self.writer = csv.writer(self.text)
        self.writer.writerow(["input", "label", "score", *(f"p_{label}" for label in labels)])
        self.write_text(self.text.getvalue())

    def line(self, prediction: Prediction) -> str:
        row = prediction.to_row()
        probabilities = row.pop("probabilities")
        row["score"] = f"{row['score']:.6g}"
        self.text.seek(0)
        self.text.truncate()
        self.writer.writerow(
            [*row.values(), *(f"{probabilities[label]:.6g}" for label in self.labels)]
        )
        return self.text.getvalue()


class JsonlResults(FileResults):
    """A JSON Lines file: one object per prediction."""

    def line(self, prediction: Prediction) -> str:
        return json.dumps(prediction.to_row()) + "\n"


@dataclass
class TerminalResults:
    """For a few inputs without `--output`: a table (or a JSON list) once all are predicted."""

    console: Console
    as_json: bool = False
    rows: list[Prediction] = field(default_factory=list)

    def write(self, prediction: Prediction) -> None:
        self.rows.append(prediction)

    def close(self) -> None:
        if self.as_json:
            print(json.dumps([row.to_row() for row in self.rows], indent=2))
            return
        if not self.rows:  # every input skipped: the count on stderr says so, no empty table
            return
        table = Table()
        table.add_column("input", overflow="fold")  # a long path wraps instead of being cut
        table.add_column("label")
        table.add_column("score")
        for row in self.rows:
            table.add_row(row.input, row.label, f"{row.score:.4f}")
        self.console.print(table)


def check_output(output: Path | None, bundle: Path, inputs: Iterable[Path]) -> None:
    """Refuse an `--output` that would overwrite what `predict` reads, before it is opened:
    a path inside the bundle folder, or a file that is one of `inputs` or of the bundle's
    files (by name, through a link or a hard link).

    Raises:
        InputError: one line naming `--output` and what it would overwrite.
    """
    if output is None:
        return
    folder = bundle.resolve()
    if is_within(output, folder):
        raise InputError(f"--output {output} is inside the bundle {bundle}: write it elsewhere")
    try:
        written = output.stat()
    except OSError:  # nothing there yet (or nothing to look at): no input is that file
        return
    for path in chain(inputs, sorted(folder.rglob("*"))):
        try:
            same = os.path.samestat(written, path.stat())
        except OSError:  # gone or unreadable: reading it reports that
            continue
        if same:
            what = "the bundle's file" if is_within(path, folder) else "the input"
            raise InputError(
                f"--output {output} is {what} {path}: the results would overwrite it; "
                "write them to another file"
            )


def open_results(path: Path, labels: list[str]) -> ResultWriter:
    """A writer for `--output PATH`, chosen by its suffix.

    Raises:
        InputError: the suffix is not .csv or .jsonl, or the file cannot be created.
    """
    suffix = path.suffix.lower()
    if suffix not in RESULT_SUFFIXES:
        raise InputError(f"--output {path}: use a .csv or .jsonl file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise InputError(f"--output {path}: cannot write it: {exc.strerror or exc}") from None
    return CsvResults(handle, labels, path) if suffix == ".csv" else JsonlResults(handle, path)


def results_writer(
    output: Path | None, labels: list[str], console: Console, as_json: bool
) -> ResultWriter:
    """The results file of `--output` (`open_results`), else the terminal's table or JSON."""
    return open_results(output, labels) if output is not None else TerminalResults(console, as_json)


@dataclass
class BatchSummary:
    """How many inputs were predicted, and which were skipped."""

    predicted: int = 0
    skipped: list[Skipped] = field(default_factory=list)


def write_results(
    results: Iterable[Prediction | Skipped],
    writer: ResultWriter,
    total: int | None,
    progress: bool,
    on_skip: Callable[[Skipped], None],
) -> BatchSummary:
    """Stream results into `writer`, reporting skips as they happen.

    Args:
        results: what `predict_stream` yields.
        writer: where predictions go (closed at the end, also on error).
        total: the number of inputs if known (for the progress bar).
        progress: show a progress bar on stderr (a TTY).
        on_skip: called with each skipped input.
    """
    summary = BatchSummary()
    bar = _progress_bar() if progress else None
    task = bar.add_task("predicting", total=total) if bar is not None else None
    try:
        if bar is not None:
            bar.start()
        for result in results:
            if isinstance(result, Skipped):
                summary.skipped.append(result)
                on_skip(result)
            else:
                writer.write(result)
                summary.predicted += 1
            if bar is not None and task is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
        writer.close()
    return summary


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr, markup=False),  # file names are text, not markup
        transient=True,
    )


def skip_reporter(console: Console) -> Callable[[Skipped], None]:
    """Print each skipped input (the first `MAX_SKIPS_SHOWN`, then a count at the end)."""
    shown = 0

    def report(skipped: Skipped) -> None:
        nonlocal shown
        shown += 1
        if shown <= MAX_SKIPS_SHOWN:
            console.print(
                f"skipped {skipped.id}: {skipped.reason}", highlight=False, soft_wrap=True
            )

    return report


# The exit code of a command whose stdout was closed (`| head`): a process ended by SIGPIPE.
STDOUT_CLOSED = 141


@contextmanager
def quiet_when_stdout_closes() -> Iterator[None]:
    """Stdout closed by its reader (`--json | head -2`) ends the command quietly, with exit
    code `STDOUT_CLOSED`: no error line, and stdout pointed at /dev/null so that nothing
    more fails at exit."""
    try:
        yield
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
        raise typer.Exit(code=STDOUT_CLOSED) from None


def summary_line(summary: BatchSummary, output: Path | None) -> str:
    """One line: predicted, skipped (and how many were not shown), where the results are."""
    parts = [f"predicted {summary.predicted} input(s)"]
    if summary.skipped:
        hidden = len(summary.skipped) - MAX_SKIPS_SHOWN
        more = f", {hidden} not listed" if hidden > 0 else ""
        parts.append(f"skipped {len(summary.skipped)}{more}")
    if output is not None:
        parts.append(f"results in {output}")
    return "; ".join(parts)
