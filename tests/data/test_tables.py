"""csv / tsv / jsonl tables of real Reuters articles: columns, errors, skipped rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mlfactory.data.tables import NoText, iter_texts, label_text, read_table
from mlfactory.errors import DataError


def _rows(sample: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in sample.read_text().splitlines()]


def _write_delimited(
    path: Path, rows: list[dict[str, str]], delimiter: str, columns: list[str]
) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row.get(column, "") for column in columns])
    return path


@pytest.mark.parametrize(("suffix", "delimiter"), [(".csv", ","), (".tsv", "\t")])
def test_delimited_tables_with_configured_columns(
    reuters_sample: Path, tmp_path: Path, suffix: str, delimiter: str
) -> None:
    rows = [
        {"body": r["text"], "topic": r["label"], "id": str(i)}
        for i, r in enumerate(_rows(reuters_sample))
    ]
    table = _write_delimited(tmp_path / f"news{suffix}", rows, delimiter, ["id", "topic", "body"])

    found = read_table(table, text_column="body", label_column="topic")

    assert [item.text for item in found.items] == [r["body"] for r in rows]
    assert {item.label for item in found.items} == {"crude", "grain", "ship"}
    assert found.items[0].origin == f"{table}:2"


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_missing_column_names_it_and_the_columns_present(
    reuters_sample: Path, tmp_path: Path, suffix: str
) -> None:
    rows = _rows(reuters_sample)
    table = tmp_path / f"news{suffix}"
    if suffix == ".jsonl":
        table.write_text(
            "".join(json.dumps({"body": r["text"], "label": r["label"]}) + "\n" for r in rows)
        )
    else:
        body_rows = [{"body": r["text"], "label": r["label"]} for r in rows]
        _write_delimited(table, body_rows, "," if suffix == ".csv" else "\t", ["body", "label"])

    with pytest.raises(DataError) as caught:
        read_table(table, text_column="text", label_column="label")

    message = str(caught.value)
    assert "column 'text' (data.text_column) not found" in message
    assert "columns present: 'body', 'label'" in message
    assert "Set data.text_column" in message


def test_a_column_named_twice_is_an_error_naming_both_places(
    reuters_sample: Path, tmp_path: Path
) -> None:
    """`label,text,text`: the reader would keep the second text without a word."""
    rows = [{**r, "summary": r["text"][:20]} for r in _rows(reuters_sample)]
    table = tmp_path / "news.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "text", "text"])
        writer.writerows([r["label"], r["text"], r["summary"]] for r in rows)
    said = f"'{table}' has the column 'text' 2 times (columns 2, 3): rename all but one"
    with pytest.raises(DataError) as caught:
        read_table(table, text_column="text", label_column="label")
    assert str(caught.value) == said
    with pytest.raises(DataError) as streamed:
        list(iter_texts(table, "text"))
    assert str(streamed.value) == said


def test_missing_label_column_is_named(reuters_sample: Path) -> None:
    with pytest.raises(DataError, match=r"column 'category' \(data.label_column\) not found"):
        read_table(reuters_sample, text_column="text", label_column="category")


def test_bad_jsonl_lines_and_rows_without_label_are_skipped(
    reuters_sample: Path, tmp_path: Path
) -> None:
    lines = reuters_sample.read_text().splitlines()
    lines[1] = "{broken json"
    lines[2] = json.dumps([1, 2])
    lines[3] = json.dumps({"text": "no label here"})
    lines[4] = json.dumps({"text": "blank label", "label": " "})
    table = tmp_path / "news.jsonl"
    table.write_text("\n".join(lines) + "\n\n")

    found = read_table(table, "text", "label")

    assert len(found.items) == 36 - 4
    assert [(s["path"], s["reason"].split(":")[0]) for s in found.skipped] == [
        (f"{table}:2", "invalid JSON"),
        (f"{table}:3", "line is not a JSON object"),
        (f"{table}:4", "no value in label column 'label'"),
        (f"{table}:5", "no value in label column 'label'"),
    ]


def test_streamed_texts_say_why_a_jsonl_line_holds_none(
    reuters_sample: Path, tmp_path: Path
) -> None:
    """`predict`'s reading of a table names a line that is not JSON as training's does."""
    lines = reuters_sample.read_text().splitlines()
    lines[1] = "{broken json"
    lines[2] = json.dumps([1, 2])
    lines[3] = json.dumps({"text": 7})
    table = tmp_path / "news.jsonl"
    table.write_text("\n".join(lines) + "\n")

    rows = list(iter_texts(table, "text"))

    assert len(rows) == 36
    assert all(isinstance(text, str) for _, text in rows[:1] + rows[4:])
    not_json = "invalid JSON: Expecting property name enclosed in double quotes"
    assert rows[1:4] == [
        (f"{table}:2", NoText(not_json)),
        (f"{table}:3", NoText("line is not a JSON object")),
        (f"{table}:4", NoText("no text in column 'text'")),
    ]
    trained = read_table(table, "text", "label").skipped
    assert [s["reason"] for s in trained[:2]] == [not_json, "line is not a JSON object"]


def test_numeric_labels_become_class_names() -> None:
    assert [label_text(v) for v in (1, 1.0, 2.5, " pos ", True)] == ["1", "1", "2.5", "pos", "True"]


def test_labels_that_are_no_plain_value_are_skipped(reuters_sample: Path, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in reuters_sample.read_text().splitlines()]
    odd: list[object] = [[1], {"a": 1}, float("nan"), float("inf"), None]
    for row, label in zip(rows, odd, strict=False):
        row["label"] = label
    table = tmp_path / "news.jsonl"
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))  # NaN, Infinity as JSON5

    found = read_table(table, "text", "label")

    assert len(found.items) == len(rows) - len(odd)
    assert {item.label for item in found.items} == {"crude", "grain", "ship"}
    not_plain = "label column 'label' holds {}, not a string or a number"
    assert [s["reason"] for s in found.skipped] == [
        not_plain.format("a list"),
        not_plain.format("an object"),
        not_plain.format("NaN or infinity"),
        not_plain.format("NaN or infinity"),
        "no value in label column 'label'",
    ]


def test_a_quote_that_is_never_closed_is_an_error_not_a_swallowed_file(
    reuters_sample: Path, tmp_path: Path
) -> None:
    rows = [
        {"text": r["text"].replace("\n", " "), "label": r["label"]} for r in _rows(reuters_sample)
    ]
    lines = ["text\tlabel"] + [f"{r['text']}\t{r['label']}" for r in rows]
    lines[4] = '"' + lines[4]  # a stray quote at the start of line 5
    table = tmp_path / "news.tsv"
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="the quote that opens a field on line 5 is never closed"):
        read_table(table, "text", "label")
    # label first: the quote opens the last column, so no field of the row is missing
    swapped = tmp_path / "swapped.csv"
    texts = [(r["label"], r["text"].replace('"', "").replace(",", " ")) for r in rows]
    first = ["label,text"] + [f"{label},{text}" for label, text in texts]
    first[6] = first[6].replace(",", ',"', 1)  # line 7's text opens a quote never closed
    swapped.write_text("\n".join(first) + "\n")
    with pytest.raises(DataError, match="the quote that opens a field on line 7 is never closed"):
        read_table(swapped, "text", "label")
    good = tmp_path / "good.tsv"  # a quoted text over several lines is still one field
    good.write_text('text\tlabel\n"two\nlines"\tcrude\none line\tgrain\n')
    found = read_table(good, "text", "label")
    assert [(i.text, i.label, i.origin) for i in found.items] == [
        ("two\nlines", "crude", f"{good}:2"),  # where the row begins
        ("one line", "grain", f"{good}:4"),
    ]


def test_a_row_with_more_fields_than_the_header_is_skipped(
    reuters_sample: Path, tmp_path: Path
) -> None:
    rows = [{"text": r["text"], "label": r["label"]} for r in _rows(reuters_sample)]
    table = _write_delimited(tmp_path / "news.csv", rows, ",", ["text", "label"])
    with table.open("a", encoding="utf-8") as handle:
        handle.write("bad, boring movie,crude\n")  # an unquoted comma in the text
    found = read_table(table, "text", "label")
    assert len(found.items) == len(rows)
    (skipped,) = found.skipped
    assert skipped["path"].endswith(":" + str(table.read_text().count("\n")))
    assert skipped["reason"].startswith("more fields than the header has columns")


def test_a_row_is_named_by_the_line_it_begins_on(tmp_path: Path) -> None:
    """Past blank lines and quoted line breaks, as an editor shows the file."""
    table = tmp_path / "news.csv"
    table.write_text(
        'text,label\n\n"oil prices\nrose",\n\nwheat fell,grain\n"ships\n\nsailed",ship\n'
    )

    found = read_table(table, "text", "label")

    assert found.skipped == [{"path": f"{table}:3", "reason": "no value in label column 'label'"}]
    assert [(i.label, i.origin) for i in found.items] == [
        ("grain", f"{table}:6"),
        ("ship", f"{table}:7"),
    ]
    assert [origin for origin, _ in iter_texts(table, "text")] == [
        f"{table}:3",
        f"{table}:6",
        f"{table}:7",
    ]


def test_a_json_array_or_an_empty_header_line_says_what_is_wrong(tmp_path: Path) -> None:
    array = tmp_path / "news.jsonl"
    array.write_text(json.dumps([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]))
    with pytest.raises(DataError, match=r"no line of .* is a JSON object .* not one JSON array"):
        read_table(array, "text", "label")
    blank = tmp_path / "news.csv"
    blank.write_text("\ntext,label\na,x\n")
    with pytest.raises(DataError, match=r"names no columns: a \.csv or \.tsv file begins with"):
        read_table(blank, "text", "label")


def test_unknown_table_suffix(tmp_path: Path) -> None:
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"use a .csv, .tsv or .jsonl file"):
        read_table(tmp_path / "data.xlsx", "text", "label")


@pytest.mark.parametrize(
    ("encoding", "problem", "command"),
    [
        ("latin-1", "byte 0xe9 at offset 18 is not UTF-8", "iconv -f latin1 -t utf-8"),
        ("utf-16", "it is UTF-16 text", "iconv -f utf-16 -t utf-8"),
    ],
)
def test_a_table_not_in_utf8_says_which_encoding_and_how_to_convert_it(
    reuters_sample: Path, tmp_path: Path, encoding: str, problem: str, command: str
) -> None:
    """A spreadsheet's export in Latin-1 or UTF-16 (a French article's `café`)."""
    rows = [{"text": r["text"], "label": r["label"]} for r in _rows(reuters_sample)[:3]]
    rows.insert(0, {"text": "un café au lait", "label": "grain"})
    table = tmp_path / "export.csv"
    with table.open("w", newline="", encoding=encoding) as handle:
        writer = csv.DictWriter(handle, ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)

    readers = (lambda: read_table(table, "text", "label"), lambda: list(iter_texts(table, "text")))
    for read in readers:
        with pytest.raises(DataError) as caught:
            read()
        message = str(caught.value)
        assert message.startswith(f"cannot read table '{table}': {problem}"), message
        assert command in message


@pytest.mark.parametrize(
    ("name", "delimiter", "hint"),
    [
        ("news.csv", ";", "holding ';': a .csv file is read as separated by commas; re-export"),
        ("news.csv", "\t", "holding tabs: a .csv file is read as separated by commas; name it"),
        ("news.tsv", ",", "holding commas: a .tsv file is read as separated by tabs; re-export"),
    ],
)
def test_a_header_split_by_another_separator_says_so(
    reuters_sample: Path, tmp_path: Path, name: str, delimiter: str, hint: str
) -> None:
    """A .csv that a spreadsheet wrote with `;` reads as one column named `text;label`."""
    table = _write_delimited(tmp_path / name, _rows(reuters_sample), delimiter, ["text", "label"])

    with pytest.raises(DataError, match=r"data.text_column.*The header is one column ") as caught:
        read_table(table, "text", "label")
    assert hint in str(caught.value)
    with pytest.raises(DataError, match=r"--text-column\. The header is one column ") as caught:
        list(iter_texts(table, "text"))
    assert hint in str(caught.value)


def test_a_one_column_header_without_another_separator_gets_no_hint(tmp_path: Path) -> None:
    (tmp_path / "news.csv").write_text("body\nwheat exports rose\n")
    with pytest.raises(DataError) as caught:
        read_table(tmp_path / "news.csv", "text", "label")
    assert str(caught.value).endswith("Set data.text_column to one of them.")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_byte_late_in_a_table_keeps_every_row_before_it_and_its_offset(
    reuters_sample: Path, tmp_path: Path, suffix: str
) -> None:
    """20,000 rows of real articles, then a Latin-1 `café` line: the rows before it all stream
    out, and the offset is the byte's in the whole file, not in the chunk decoded."""
    rows = [r["text"] for r in _rows(reuters_sample)]
    texts = [rows[i % len(rows)][:40] for i in range(20_000)]
    if suffix == ".csv":
        lines = ["text", *('"' + text.replace('"', '""') + '"' for text in texts)]
    else:
        lines = [json.dumps({"text": text}) for text in texts]
    data = "\n".join(lines).encode() + b"\n"
    bad = "un café" if suffix == ".csv" else '{"text": "un café"}'
    table = tmp_path / f"late{suffix}"
    table.write_bytes(data + bad.encode("latin-1") + b"\n" + lines[-1].encode() + b"\n")
    offset = len(data) + bad.index("é")

    seen: list[str | NoText] = []
    with pytest.raises(DataError) as caught:
        for _, text in iter_texts(table, "text"):
            seen.append(text)
    assert seen == texts
    line = len(lines) + 1
    assert f"byte 0xe9 at offset {offset} is not UTF-8 (line {line})" in str(caught.value)
    with pytest.raises(DataError, match=f"byte 0xe9 at offset {offset} is not UTF-8"):
        read_table(table, "text", "text")
