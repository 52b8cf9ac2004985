"""`mlfactory predict`: many inputs through one bundle, in batches, into a results file.

Inputs are files, folders (recursive), tables of texts (`.csv`/`.tsv`/`.jsonl`, one text per
row), texts given on the command line, and stdin. What a bundle accepts comes from its modality
(`api_input.kind`, `file_suffixes`, `reads_tables`), never from its name. The inputs are
checked first (`plan_inputs`): a wrong *kind* of input (a table for an image bundle, a binary
file for a text bundle, a missing path) refuses the whole run in one line. Then they stream
(`predict_stream`): read, encoded and run `batch_size` at a time, so a folder or a table of any
size runs in constant memory. An input that cannot be read or decoded, or that the model fails
on, is reported by name and skipped, and so is a folder that cannot be listed; the rest are
predicted.

No input is read past `MAX_INPUT_BYTES` (the server's default limit of one upload): a larger
file or line is skipped, a larger stdin refused. Entries of a folder that are not regular files
once links are followed (a link to a device, a named pipe) are skipped unread.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mlfactory.batch_items import Input, Prediction, Skipped
from mlfactory.data.folders import iter_files, read_item_file, shown, special_kind
from mlfactory.data.tables import TABLE_SUFFIXES, NoText, iter_texts
from mlfactory.errors import DataError, InputError
from mlfactory.modalities import Modality
from mlfactory.predictor import Predictor

STDIN = "-"
# Bytes read to tell text from binary.
SNIFF_BYTES = 8192
# The largest input read, in bytes: the server's default limit of one upload
# (`ServingSettings.max_upload_bytes`; not imported: `predict` loads no serving code).
MAX_INPUT_BYTES = 10 * 1024 * 1024
LIMIT_OPTION = "--max-input-bytes"


@dataclass
class InputPlan:
    """The checked inputs of one `predict` call, ready to stream."""

    sources: list[Callable[[], Iterator[Input | Skipped]]] = field(default_factory=list)
    # Files in folders that are not of the bundle's kind: not inputs, only counted.
    ignored: int = 0
    # Inputs known before streaming (None when a table or stdin is among them).
    count: int | None = 0
    max_bytes: int = MAX_INPUT_BYTES  # the largest input read, in bytes
    files: list[Path] = field(default_factory=list)  # every file read: --output is none of them
    output: Path | None = None  # the --output file, refused as an input before it is read


def plan_inputs(
    args: list[str],
    modality: Modality,
    texts: list[str] | None = None,
    text_column: str = "text",
    stdin: BinaryIO | None = None,
    max_bytes: int = MAX_INPUT_BYTES,
    output: Path | None = None,
) -> InputPlan:
    """Check the inputs given to `predict` and plan how to stream them (a table found in a
    folder that cannot be used is a skip naming it; one given by name refuses the run).

    Args:
        args: files, folders and `-` (stdin) as given on the command line.
        modality: the bundle's modality; decides which inputs it takes.
        texts: texts given with `--text` (text bundles only).
        text_column: the column of a table that holds the text.
        stdin: where `-` reads from (default: the process's stdin).
        max_bytes: the largest input read, in bytes (a file, stdin, a line of stdin).
        output: the `--output` file: refused when it is one of the inputs, before any is read.

    Raises:
        InputError: a path does not exist or is not a file or folder, a table is given to a
            bundle that does not read tables, a binary file or `--text` is given to a bundle of
            the other kind, a table lacks `text_column`, `-` is given twice, stdin is closed
            or (as one file) larger than `max_bytes`, `output` is an input, or there are no
            inputs at all.
    """
    takes_texts = modality.api_input.kind == "texts"
    plan = InputPlan(max_bytes=max_bytes, output=output)
    if texts and not takes_texts:
        raise InputError(f"--text is for text bundles; this one classifies {modality.name} files")
    for index, text in enumerate(texts or [], start=1):
        plan.sources.append(_one(Input(f"--text {index}", _constant(text.encode("utf-8")))))
        _add_count(plan, 1)
    if args.count(STDIN) > 1:
        raise InputError("- (stdin) is given more than once: stdin can be read only once")
    for arg in args:
        if arg == STDIN:
            _plan_stdin(plan, stdin, takes_texts)
            continue
        path = Path(arg).expanduser()
        if path.is_dir():
            _plan_folder(plan, path, modality, text_column)
        elif path.is_file():
            _plan_file(plan, path, modality, text_column, explicit=True)
        elif path.exists():  # a device, a pipe, a socket: no input to read whole
            kind = special_kind(path) or "not a regular file"
            raise InputError(f"{arg} is {kind}, not a file or folder: give files, folders or -")
        else:
            raise InputError(f"no such file or folder: {arg}")
    if not plan.sources:
        what = "files, folders, --text or - (stdin)" if takes_texts else "files or folders"
        raise InputError(f"no inputs of the {modality.name} bundle found: give {what}")
    return plan


def _plan_folder(plan: InputPlan, folder: Path, modality: Modality, text_column: str) -> None:
    entries, ignored = _folder_files(folder, modality)
    plan.ignored += ignored
    for entry in entries:
        if isinstance(entry, Skipped):  # a folder below it that cannot be read
            plan.sources.append(_one(entry))
            _add_count(plan, 1)
        else:
            _plan_file(plan, entry, modality, text_column, explicit=False)


def _plan_file(
    plan: InputPlan, path: Path, modality: Modality, text_column: str, explicit: bool
) -> None:
    is_table = path.suffix.lower() in TABLE_SUFFIXES
    plan.files.append(path)
    _refuse_output(plan.output, path)
    if is_table and not modality.reads_tables:
        raise InputError(
            f"{path} is a table, but this bundle classifies {modality.name} files "
            f"({', '.join(modality.file_suffixes)}): give those files or their folders"
        )
    if is_table:
        try:
            _check_table(path, text_column)
        except InputError as exc:
            if explicit:
                raise
            plan.sources.append(_one(Skipped(str(path), str(exc))))  # one table of a folder
            _add_count(plan, 1)
            return
        plan.sources.append(_table_inputs(path, text_column))
        plan.count = None
        return
    if explicit and modality.api_input.kind == "texts" and _is_binary(path):
        raise InputError(
            f"{path} is a binary file, not text: this bundle classifies texts; give text "
            "files, a .csv/.tsv/.jsonl table (--text-column), --text or - (stdin)"
        )
    plan.sources.append(_one(Input(str(path), _file_reader(path, plan.max_bytes))))
    _add_count(plan, 1)


def _refuse_output(output: Path | None, path: Path) -> None:
    """Refuse an `--output` that is the input `path` (by name or a link), before it is read:
    an earlier results file left in an input folder."""
    try:
        same = output is not None and os.path.samestat(output.stat(), path.stat())
    except OSError:  # nothing there yet (or nothing to look at): not that input
        return
    if same:
        raise InputError(
            f"--output {output} is the input {path}: the results would overwrite it; "
            "write them to another file"
        )


def _plan_stdin(plan: InputPlan, stdin: BinaryIO | None, takes_texts: bool) -> None:
    """`-`: one text per line of stdin (text bundles), else stdin as one file, read now: one
    larger than the limit is refused before anything is predicted."""
    if stdin is None:
        if sys.stdin is None:  # started with stdin closed (`<&-`)
            raise InputError("- reads stdin, but stdin is closed: pipe the input in")
        stdin = sys.stdin.buffer
    if takes_texts:
        plan.sources.append(_stdin_lines(stdin, plan.max_bytes))
        plan.count = None  # one text per line: unknown until read
        return
    try:
        data = stdin.read(plan.max_bytes + 1)
    except OSError as exc:
        raise InputError(f"- (stdin): cannot read it: {exc.strerror or exc}") from None
    if len(data) > plan.max_bytes:
        raise InputError(
            f"- (stdin) holds more than {plan.max_bytes:,} bytes, the limit of one input "
            f"({LIMIT_OPTION} sets it)"
        )
    plan.sources.append(_one(Input(STDIN, _constant(data))))
    _add_count(plan, 1)


def _add_count(plan: InputPlan, count: int) -> None:
    if plan.count is not None:
        plan.count += count


def _folder_files(folder: Path, modality: Modality) -> tuple[list[Path | Skipped], int]:
    """Files below `folder` that hold inputs of the modality (tables too if it reads them), and
    a skip for each folder below it that cannot be read, in walk order."""
    wanted = set(modality.file_suffixes) | (set(TABLE_SUFFIXES) if modality.reads_tables else set())
    files: list[Path | Skipped] = []
    ignored = 0

    def unreadable(path: Path, reason: str) -> None:
        files.append(Skipped(str(path), reason))

    for path in iter_files(folder, unreadable):
        if path.suffix.lower() not in wanted:
            ignored += 1
        elif kind := special_kind(path):  # a link to /dev/zero would be read forever
            files.append(Skipped(str(path), f"{kind}, not a regular file: not read"))
        else:
            files.append(path)
    return files, ignored


def _file_reader(path: Path, max_bytes: int) -> Callable[[], bytes]:
    """Reads the file at most `max_bytes` long; a longer one raises `InputError` (skipped)."""

    def read() -> bytes:
        return read_item_file(path, max_bytes, f"one input ({LIMIT_OPTION} sets it)")

    return read


def _is_binary(path: Path) -> bool:
    """True when the start of the file holds a NUL byte or is not UTF-8."""
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if b"\0" in head:
        return True
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return True
    return False


def _check_table(path: Path, text_column: str) -> None:
    """Read a table's header (csv) or first object (jsonl): the text column must be there."""
    try:
        next(iter_texts(path, text_column), None)
    except DataError as exc:
        raise InputError(str(exc)) from None


def _one(item: Input | Skipped) -> Callable[[], Iterator[Input | Skipped]]:
    return lambda: iter([item])


def _constant(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def _table_inputs(path: Path, text_column: str) -> Callable[[], Iterator[Input | Skipped]]:
    def rows() -> Iterator[Input | Skipped]:
        try:
            for origin, text in iter_texts(path, text_column):
                if isinstance(text, NoText):  # no text, or (jsonl) a line that is not JSON
                    yield Skipped(origin, text.reason)
                else:
                    yield Input(origin, _constant(text.encode("utf-8")))
        except DataError as exc:  # the file broke part-way: its remaining rows are skipped
            yield Skipped(str(path), f"{exc} (every row before that line was predicted)")

    return rows


def _stdin_lines(stream: BinaryIO, max_bytes: int) -> Callable[[], Iterator[Input | Skipped]]:
    """One text per non-empty line of `stream`; a line longer than `max_bytes` is skipped,
    read past in pieces of at most that size."""

    def read() -> Iterator[Input | Skipped]:
        number = 0
        while line := stream.readline(max_bytes + 1):
            number += 1
            if len(line) > max_bytes and not line.endswith(b"\n"):
                while (rest := stream.readline(max_bytes)) and not rest.endswith(b"\n"):
                    pass
                yield Skipped(
                    f"stdin:{number}",
                    f"a line of more than {max_bytes:,} bytes, the limit of one input "
                    f"({LIMIT_OPTION} sets it): not read",
                )
            elif line.strip():  # one text per non-empty line
                yield Input(f"stdin:{number}", _constant(line.rstrip(b"\r\n")))

    return read


def iter_inputs(plan: InputPlan) -> Iterator[Input | Skipped]:
    """Every planned input, lazily, in the order given (folders in sorted order). Names that
    are not UTF-8 show their bytes escaped (`bad\\xffname.png`), as reports show them, in a
    skip's reason too."""
    for source in plan.sources:
        for item in source():
            if isinstance(item, Skipped):
                yield Skipped(shown(item.id), shown(item.reason))
            else:
                name = shown(item.id)
                yield item if name == item.id else dataclasses.replace(item, id=name)


def predict_stream(
    predictor: Predictor,
    inputs: Iterable[Input | Skipped],
    batch_size: int = 32,
) -> Iterator[Prediction | Skipped]:
    """Predict inputs `batch_size` at a time, yielding a result or a skip per input, in order.

    An input that cannot be read or decoded is skipped with the reason. When the model fails on
    a batch (`InputError`: `Predictor.check_finite` finds a NaN or infinite answer), the batch
    is run again one input at a time, so only the inputs it fails on are skipped.
    """
    batch: list[tuple[str, dict[str, np.ndarray]]] = []
    for item in inputs:
        # Skips are yielded at once; the predictions keep the order of their inputs.
        encoded = item if isinstance(item, Skipped) else _encode(predictor, item)
        if isinstance(encoded, Skipped):
            yield encoded
            continue
        batch.append((item.id, encoded))
        if len(batch) >= batch_size:
            yield from _run(predictor, batch)
            batch = []
    yield from _run(predictor, batch)


def _encode(predictor: Predictor, item: Input) -> dict[str, np.ndarray] | Skipped:
    try:
        raw = item.read()
    except OSError as exc:
        return Skipped(item.id, f"cannot read: {exc.strerror or exc}")
    except InputError as exc:  # larger than the limit
        return Skipped(item.id, str(exc))
    try:
        return predictor.encode(raw)
    except InputError as exc:
        return Skipped(item.id, str(exc))
    except Exception as exc:  # decoders of arbitrary files raise many exception types
        return Skipped(item.id, f"could not be decoded ({type(exc).__name__})")


def _run(
    predictor: Predictor, batch: list[tuple[str, dict[str, np.ndarray]]]
) -> Iterator[Prediction | Skipped]:
    if not batch:
        return
    names = [input_id for input_id, _ in batch]
    try:
        output = predictor.run([encoded for _, encoded in batch])
        predictor.check_finite(output, names)  # NaN or infinite answers: InputError
    except InputError as exc:
        if len(batch) == 1:
            yield Skipped(names[0], str(exc).removeprefix(f"{names[0]}: "))
            return
        for one in batch:  # run them one by one: only the inputs the model fails on are skipped
            yield from _run(predictor, [one])
        return
    for name, result in zip(names, predictor.to_predictions(output.probabilities), strict=True):
        yield Prediction(name, result.label, result.score, result.probabilities)
