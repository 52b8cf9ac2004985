"""Text tables: csv, tsv and jsonl files with a text column and a label column.

Rows without a label are skipped and reported; a column missing from the whole file is a
`DataError` naming the columns that are there. `iter_texts` streams the texts of a table
without labels, for batch prediction.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from mlfactory.data.raw import RawItem, RawSource, skip
from mlfactory.errors import DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")
# A byte that is not UTF-8, as `errors="surrogateescape"` reads it.
_ESCAPED = re.compile("[\udc80-\udcff]")
# Long documents (news articles) exceed csv's default field limit of 128 KiB.
csv.field_size_limit(2**31 - 1)


def is_table(path: Path) -> bool:
    """Whether the file is a table this module reads (by suffix)."""
    return path.suffix.lower() in TABLE_SUFFIXES


def read_table(path: Path, text_column: str, label_column: str) -> RawSource:
    """Read a csv / tsv / jsonl file into text candidates.

    Args:
        path: the table; its suffix picks the format.
        text_column: the column holding the text (`data.text_column`).
        label_column: the column holding the class (`data.label_column`).

    Raises:
        DataError: unreadable file, unknown suffix, or a column that no row has.
    """
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            with _open_table(path) as handle:
                lines, reader = _csv_reader(handle, suffix)
                columns = list(reader.fieldnames or [])
                check_columns(str(path), columns, text_column, label_column)
                rows, extra = _numbered_rows(path, lines, reader)
                result = rows_to_raw(str(path), rows, text_column, label_column)
                result.skipped[:0] = extra.skipped
                return result
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path, text_column, label_column)
    except (OSError, NotUtf8, csv.Error) as exc:
        raise unreadable_table(path, exc) from None
    raise DataError(f"'{path}' is not a table: use a .csv, .tsv or .jsonl file")


class NotUtf8(ValueError):
    """A byte of a table that is not UTF-8: the first one, by its offset in the whole file."""

    def __init__(self, offset: int, byte: int, line: int, utf16: bool) -> None:
        super().__init__(f"byte 0x{byte:02x} at offset {offset} is not UTF-8 (line {line})")
        self.offset, self.byte, self.line, self.utf16 = offset, byte, line, utf16


def _open_table(path: Path) -> io.TextIOWrapper:
    """A table opened for `_utf8_lines`: bytes that are not UTF-8 are kept, to be found by
    their offset, instead of failing the chunk that holds them (and the rows before them)."""
    return path.open(encoding="utf-8", errors="surrogateescape", newline="")


def _utf8_lines(handle: Iterable[str]) -> Iterator[str]:
    """The lines of a table opened with `_open_table`, without its UTF-8 BOM. Every line
    before the first byte that is not UTF-8 is yielded; that byte raises `NotUtf8`."""
    offset = 0
    for number, line in enumerate(handle, start=1):
        bad = _ESCAPED.search(line)
        if bad is not None:
            at = offset + len(line[: bad.start()].encode("utf-8", "surrogateescape"))
            utf16 = at == 0 and line[:2] in ("\udcff\udcfe", "\udcfe\udcff")
            raise NotUtf8(at, ord(bad.group()) - 0xDC00, number, utf16)
        offset += len(line.encode("utf-8"))
        yield line.removeprefix("\ufeff") if number == 1 else line


class _Lines:
    """The lines of an open file, read by `csv`, noting the first line of each record (a
    quoted field may hold line breaks, and blank lines between records are skipped)."""

    def __init__(self, handle: Iterable[str]) -> None:
        self._lines = _utf8_lines(handle)
        self.count = 0
        self._first: int | None = None
        self._record: list[str] = []
        self.last_record = ""  # the text of the record read before the last `record_start`

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.count += 1
        self._record.append(line)
        if self._first is None and line.strip("\r\n"):
            self._first = self.count
        return line

    def record_start(self) -> int:
        """Where the record read since the last call began: its first line that is not blank."""
        first, self._first = self._first, None
        self.last_record, self._record = "".join(self._record), []
        return self.count if first is None else first


def _csv_reader(handle: Iterable[str], suffix: str) -> tuple[_Lines, csv.DictReader[str]]:
    """A reader of the csv or tsv file `handle` past its header, and its lines."""
    lines = _Lines(handle)
    reader = csv.DictReader(lines, delimiter="," if suffix == ".csv" else "\t")
    _ = reader.fieldnames  # reads the header
    lines.record_start()
    return lines, reader


def _numbered_rows(
    path: Path, lines: _Lines, reader: csv.DictReader[str]
) -> tuple[list[tuple[int, dict[str, object]]], RawSource]:
    """(first line, row) of every row, and the rows skipped for having more fields than the
    header; a quote that is never closed is an error, not a row that swallows the rest of the
    file.

    Raises:
        DataError: the file ends inside a quoted field.
    """
    rows: list[tuple[int, dict[str, object]]] = []
    extra = RawSource()
    started = ended = 0
    for row in reader:
        started, ended = lines.record_start(), lines.count
        if None in row:  # DictReader files the fields past the header's under None
            reason = "more fields than the header has columns: quote a text holding the delimiter"
            extra.skipped.append(skip(f"{path}:{started}", reason))
            continue
        rows.append((started, {str(key): value for key, value in row.items()}))
    last = rows and rows[-1][0] == started < ended  # the last row spans lines
    if last and (None in rows[-1][1].values() or _unclosed(lines.last_record, reader)):
        raise DataError(
            f"cannot read table '{path}': the quote that opens a field on line {started} is "
            "never closed, so the rest of the file would be that one field; fix or re-export "
            "the file"
        )
    return rows, extra


def _unclosed(record: str, reader: csv.DictReader[str]) -> bool:
    """Whether the file ends inside a quoted field of `record`, its last record: a quote
    opened in the last column leaves no field missing to tell it by."""
    try:
        list(csv.reader(io.StringIO(record), dialect=reader.reader.dialect, strict=True))
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _read_jsonl(path: Path, text_column: str, label_column: str) -> RawSource:
    rows: list[tuple[int, Mapping[str, object]]] = []
    bad = RawSource()
    columns: dict[str, None] = {}
    with _open_table(path) as handle:
        for number, line in enumerate(_utf8_lines(handle), start=1):
            if not line.strip():
                continue
            row = _json_object(line)
            if isinstance(row, str):
                bad.skipped.append(skip(f"{path}:{number}", row))
                continue
            columns.update(dict.fromkeys(row))
            rows.append((number, row))
    if not rows and bad.skipped:
        first = bad.skipped[0]
        raise DataError(
            f"no line of '{path}' is a JSON object ({first['path']}: {first['reason']}): a "
            ".jsonl file holds one JSON object per line, not one JSON array"
        )
    check_columns(str(path), list(columns), text_column, label_column)
    result = rows_to_raw(str(path), rows, text_column, label_column)
    result.skipped[:0] = bad.skipped
    return result


def _json_object(line: str) -> dict[str, object] | str:
    """The JSON object on a line of a .jsonl file, or why there is none."""
    try:
        row = json.loads(line.rstrip("\r\n"))  # a line cut short: "Unterminated string"
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg}"
    return row if isinstance(row, dict) else "line is not a JSON object"


def check_columns(origin: str, columns: list[str], text_column: str, label_column: str) -> None:
    """Raise a `DataError` naming the missing column and the columns present.

    Raises:
        DataError: `text_column` or `label_column` is not among `columns`.
    """
    if not columns:
        raise DataError(
            f"'{origin}' names no columns: a .csv or .tsv file begins with its header line "
            f"(e.g. {text_column},{label_column}), not an empty one"
        )
    _check_once(origin, columns, (text_column, label_column))
    for column, key in ((text_column, "text_column"), (label_column, "label_column")):
        if column not in columns:
            present = ", ".join(repr(c) for c in columns) or "none"
            raise DataError(
                f"column '{column}' (data.{key}) not found in '{origin}'; columns present: "
                f"{present}. Set data.{key} to one of them.{_separator_hint(columns, origin)}"
            )


def label_text(value: object) -> str:
    """A label value as the string class name (1.0 and 1 both become "1", JSON true "True");
    "" for a value that is no plain label (a list, an object, NaN or infinity in JSON)."""
    if not isinstance(value, str | int | float):  # bool is an int
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        if value.is_integer():
            return str(int(value))
    return str(value).strip()


def no_label_reason(value: object, label_column: str) -> str:
    """Why a row's label value (one `label_text` makes "" of) is no class name."""
    if value is None or isinstance(value, str):
        return f"no value in label column '{label_column}'"
    if isinstance(value, float):
        kind = "NaN or infinity"
    elif isinstance(value, list | dict):
        kind = "a list" if isinstance(value, list) else "an object"
    else:
        kind = f"a {type(value).__name__}"
    return f"label column '{label_column}' holds {kind}, not a string or a number"


def rows_to_raw(
    origin: str,
    rows: Iterable[tuple[int, Mapping[str, object]]],
    text_column: str,
    label_column: str,
) -> RawSource:
    """Turn (row number, row) pairs into text candidates; rows without text or label are skipped.

    Args:
        origin: the file (or data set) name shown as `origin:row` in reports.
        rows: numbered rows, each mapping column names to values.
        text_column: the column holding the text.
        label_column: the column holding the class.
    """
    result = RawSource()
    for number, row in rows:
        where = f"{origin}:{number}"
        text, label = row.get(text_column), row.get(label_column)
        if label is None or not label_text(label):
            result.skipped.append(skip(where, no_label_reason(label, label_column)))
        elif not isinstance(text, str):
            result.skipped.append(skip(where, f"no text in column '{text_column}'"))
        else:
            result.items.append(RawItem(label=label_text(label), origin=where, text=text))
    return result


@dataclass(frozen=True)
class NoText:
    """A row of a table that holds no text to predict, and why."""

    reason: str


def iter_texts(path: Path, text_column: str) -> Iterator[tuple[str, str | NoText]]:
    """Stream (origin, text) of each row of a csv / tsv / jsonl file; no label is needed.

    The origin is `path:line`. A row without a text gives `NoText` saying why: its text is
    missing or not a string, or (jsonl) its line is not JSON or not a JSON object. Rows are
    read lazily: a table of any size streams in constant memory.

    Raises:
        DataError: unreadable file, or `text_column` missing from the csv header (jsonl: from
            the first object).
    """
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            with _open_table(path) as handle:
                lines, reader = _csv_reader(handle, suffix)
                _check_text_column(path, list(reader.fieldnames or []), text_column)
                for row in reader:
                    yield f"{path}:{lines.record_start()}", _row_text(row, text_column)
            return
        with _open_table(path) as handle:
            first = True
            for number, line in enumerate(_utf8_lines(handle), start=1):
                if not line.strip():
                    continue
                parsed = _json_object(line)
                if first and isinstance(parsed, dict):
                    _check_text_column(path, list(parsed), text_column)  # the first object decides
                    first = False
                yield f"{path}:{number}", _row_text(parsed, text_column)
    except (OSError, NotUtf8, csv.Error) as exc:
        raise unreadable_table(path, exc) from None


def _row_text(row: Mapping[str, object] | str, text_column: str) -> str | NoText:
    """The text of a row, or `NoText`: why it has none (`row` is a reason for a bad line)."""
    if isinstance(row, str):
        return NoText(row)
    text = row.get(text_column)
    return text if isinstance(text, str) else NoText(f"no text in column '{text_column}'")


def unreadable_table(path: Path, exc: Exception) -> DataError:
    """The error for a table that cannot be read; one that is not UTF-8 says so, and how to
    convert it (a spreadsheet's export is often Latin-1 or UTF-16)."""
    if isinstance(exc, UnicodeDecodeError):  # bytes decoded at once: their offsets hold
        data = bytes(exc.object)
        utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")
        exc = NotUtf8(exc.start, data[exc.start], data[: exc.start].count(b"\n") + 1, utf16)
    if not isinstance(exc, NotUtf8):
        return DataError(f"cannot read table '{path}': {exc}; fix or re-export the file")
    if exc.utf16:
        found, source = "it is UTF-16 text", "utf-16"
    else:
        found, source = str(exc), "latin1"  # the usual other encoding of a spreadsheet's export
    return DataError(
        f"cannot read table '{path}': {found}, and tables are read as UTF-8; save it as "
        f"UTF-8, e.g. iconv -f {source} -t utf-8 IN > OUT"
    )


def _separator_hint(columns: list[str], origin: str) -> str:
    """When a .csv or .tsv header is one column holding another separator (a .csv separated by
    `;`, as spreadsheets in many locales write it), the sentence that says so; else ''."""
    suffix = Path(origin).suffix.lower()
    if suffix not in (".csv", ".tsv") or len(columns) != 1:
        return ""
    expected = "," if suffix == ".csv" else "\t"
    for separator, name in (("\t", "tabs"), (";", "';'"), ("|", "'|'"), (",", "commas")):
        if separator != expected and separator in columns[0]:
            fix = "name it .tsv" if separator == "\t" else f"re-export it with {_NAMES[suffix]}"
            return (
                f" The header is one column holding {name}: a {suffix} file is read as "
                f"separated by {_NAMES[suffix]}; {fix}"
            )
    return ""


_NAMES = {".csv": "commas", ".tsv": "tabs"}


def _check_once(origin: str, columns: list[str], wanted: tuple[str, ...]) -> None:
    """Refuse a header that names a column read from twice: the reader would keep the last
    one's values without a word (`label,text,text`)."""
    for column in wanted:
        places = [str(i) for i, name in enumerate(columns, 1) if name == column]
        if len(places) > 1:
            raise DataError(
                f"'{origin}' has the column '{column}' {len(places)} times (columns "
                f"{', '.join(places)}): rename all but one"
            )


def _check_text_column(path: Path, columns: list[str], text_column: str) -> None:
    _check_once(str(path), columns, (text_column,))
    if text_column not in columns:
        present = ", ".join(repr(c) for c in columns) or "none"
        raise DataError(
            f"column '{text_column}' not found in '{path}'; columns present: {present}. "
            f"Name the text column with --text-column.{_separator_hint(columns, str(path))}"
        )
