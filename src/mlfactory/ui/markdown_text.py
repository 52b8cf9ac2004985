"""Untrusted text made safe to show in Streamlit's Markdown.

Streamlit renders Markdown in `st.markdown`, headers, captions, alerts, metrics and `st.table`
cells. A bundle's strings (its name, labels, data source) and an API's answers are not ours:
shown raw, `[x](http://phish.example)` becomes a link and `![p](http://host/p.png)` an image
the browser fetches (a tracking pixel). Every such string goes through `plain` (ordinary text)
or `code` (a code span) before it reaches Markdown, every table through `plain_table`, and
every message of the API through `message` (which keeps its `code` spans).
"""

from __future__ import annotations

import re
import string

import pandas as pd

# CommonMark lets a backslash escape any ASCII punctuation character, and only those.
_PUNCTUATION = re.compile("([" + re.escape(string.punctuation) + "])")
_LINE_BREAKS = re.compile(r"[\r\n\t\v\f\u0085\u2028\u2029]+")
_BACKTICK_RUNS = re.compile(r"`+")
_CODE_SPANS = re.compile(r"(`+)(.+?)\1(?!`)")
# Streamlit links bare URLs and e-mail addresses in text after Markdown is parsed, escapes and
# all (GFM's autolink literals), but never inside a code span: a word that a linker could take
# for one is shown as a code span, character for character (a copied URL is the URL).
_LINKABLE = re.compile(r"://|www\.|@", re.IGNORECASE)
_WORDS = re.compile(r"(\s+)")


def plain(text: object) -> str:
    """`text` as Markdown that shows its characters, on one line: every ASCII punctuation
    character backslash-escaped (no link, image, emphasis, HTML, `:color[...]` directive or `$`
    math can start), a word holding `://`, `www.` or `@` (which GFM would link) as a `code`
    span, and line breaks made spaces."""
    words = _WORDS.split(_LINE_BREAKS.sub(" ", str(text)))
    return "".join(
        code(word) if _LINKABLE.search(word) else _PUNCTUATION.sub(r"\\\1", word) for word in words
    )


def code(text: object) -> str:
    """`text` as a Markdown code span, shown verbatim on one line: fenced by one backtick more
    than its longest run of backticks, so that none of its own ends the span."""
    value = _LINE_BREAKS.sub(" ", str(text))
    longest = max((len(run) for run in _BACKTICK_RUNS.findall(value)), default=0)
    fence = "`" * (longest + 1)
    if value.startswith("`") or value.endswith("`"):  # CommonMark strips one space each side
        value = f" {value} "
    return f"{fence}{value}{fence}"


def message(text: object) -> str:
    """A message of the API or of the UI's client (which may quote a bundle, a file name or a
    server's answer) as Markdown: its `code` spans kept as code spans (inert: no link or image
    starts inside one), the rest as `plain` text."""
    value, shown, start = str(text), [], 0
    for span in _CODE_SPANS.finditer(value):
        shown += [plain(value[start : span.start()]), code(span.group(2))]
        start = span.end()
    return "".join([*shown, plain(value[start:])])


def plain_table(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` for `st.table`, which renders Markdown in its cells: its text cells,
    index and column names passed through `plain`; numbers and missing values left to the
    table to show."""
    shown = frame.copy()
    for column in shown.columns:
        if shown[column].dtype == object:
            shown[column] = shown[column].map(_plain_if_text)
    shown.index = shown.index.map(_plain_if_text)
    shown.columns = shown.columns.map(_plain_if_text)
    return shown


def _plain_if_text(value: object) -> object:
    return plain(value) if isinstance(value, str) else value
