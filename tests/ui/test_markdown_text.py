"""Untrusted text shown through Markdown stays text: no link, no image, no way out of a span.

Rendered with markdown-it-py, a CommonMark parser (Streamlit's react-markdown is CommonMark
too); the browser test of the model card (test_hostile_bundle_page.py) checks Streamlit itself.
"""

from __future__ import annotations

import html
import re

import pandas as pd
import pytest
from markdown_it import MarkdownIt

from mlfactory.ui.markdown_text import code, message, plain, plain_table

HOSTILE = [
    "x` [link](http://phish.example/a) `",
    "![p](http://127.0.0.1:1/p.png)",
    "<img src=http://127.0.0.1:1/p.png>",
    "[a][b]\n\n[b]: http://phish.example",
    "**bold** _it_ # head\n- item",
    "```` ` `` ```",
    "`",
    "back\\slash \\[not a link\\](http://x)",
    "bare http://phish.example/a, www.phish.example and me@phish.example",
]
commonmark = MarkdownIt("commonmark")


def _inline(markdown: str) -> str:
    """The HTML of one paragraph, its <p> wrapper removed."""
    rendered = commonmark.render(markdown).strip()
    assert rendered.startswith("<p>") and rendered.endswith("</p>"), rendered
    return rendered[3:-4]


@pytest.mark.parametrize("text", HOSTILE)
def test_plain_text_renders_as_exactly_its_characters(text: str) -> None:
    shown = _inline(f"- **Built from:** {plain(text)}, 10 items".removeprefix("- "))
    assert "<a" not in shown and "<img" not in shown
    one_line = re.sub(r"\n+", " ", text)
    assert "://" not in _outside_code(shown) and "@" not in _outside_code(shown)
    seen = html.unescape(re.sub(r"</?code>", "", shown))  # a code span shows its characters
    assert seen == f"<strong>Built from:</strong> {one_line}, 10 items"


@pytest.mark.parametrize("text", HOSTILE)
def test_a_code_span_holds_exactly_its_characters(text: str) -> None:
    shown = _inline(f"Source: {code(text)} end")
    assert "<a" not in shown and "<img" not in shown
    assert shown.startswith("Source: <code>") and shown.endswith("</code> end")
    inside = html.unescape(shown.removeprefix("Source: <code>").removesuffix("</code> end"))
    assert inside == re.sub(r"\n+", " ", text)


def _outside_code(rendered: str) -> str:
    return re.sub(r"<code>.*?</code>", "", rendered)


def test_bare_urls_and_addresses_are_code_spans_where_a_linker_would_find_them() -> None:
    """Streamlit links them in the text after parsing (GFM autolink literals, escapes
    resolved), never in a code span: there they stay exactly their characters (a copied URL
    works)."""
    shown = _inline(plain("see http://phish.example/a?b=1&c=2, www.phish.example and a@b.example"))
    assert _outside_code(shown) == "see   and "
    assert re.findall(r"<code>(.*?)</code>", html.unescape(shown)) == [
        "http://phish.example/a?b=1&c=2,",
        "www.phish.example",
        "a@b.example",
    ]


def test_line_breaks_cannot_start_a_block() -> None:
    assert plain("a\n# heading\r\n- item\u2028b") == r"a \# heading \- item b"
    assert code("a\n\nb") == "`a b`"


def test_a_table_shows_its_labels_and_keeps_its_numbers() -> None:
    frame = pd.DataFrame(
        {"share": [0.5, 0.25], "note": ["[x](http://p.example)", None]},
        index=pd.Index(["![p](http://h/p.png)", "cat"], name="label"),
    )
    shown = plain_table(frame)
    assert list(shown.index) == [plain("![p](http://h/p.png)"), "cat"]
    assert shown.index[0] == "`![p](http://h/p.png)`"  # a code span: shown, never linked
    assert shown["share"].tolist() == [0.5, 0.25]
    assert shown["note"].tolist() == [plain("[x](http://p.example)"), None]
    assert frame.index[0] == "![p](http://h/p.png)"  # the frame given is left as it was


def test_a_message_keeps_its_code_spans_and_nothing_else_live() -> None:
    """The API's messages say `mlfactory profile BUNDLE`: shown as code, as before; a quoted
    bundle string around them is still text."""
    text = "run `mlfactory profile BUNDLE` on [x](http://phish.example) ![p](http://h/p.png) `a`"
    shown = _inline(message(text))
    assert "<a" not in shown and "<img" not in shown
    assert "<code>mlfactory profile BUNDLE</code>" in shown
    spans = re.findall(r"<code>(.*?)</code>", html.unescape(shown))
    assert spans == [
        "mlfactory profile BUNDLE",
        "[x](http://phish.example)",
        "![p](http://h/p.png)",
        "a",
    ]
    assert message("an unclosed ` [x](http://p.example)") == plain(
        "an unclosed ` [x](http://p.example)"
    )
