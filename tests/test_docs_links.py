"""Every relative link of the README and docs/ leads somewhere: the file exists, and an anchor
names a heading of it (as the docs site, built with `mkdocs build --strict`, and GitHub make
anchors of headings)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def slug(heading: str) -> str:
    """The anchor of a heading, as Python-Markdown's `toc` extension makes it."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)  # code keeps its text
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links keep theirs
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def prose_lines(page: Path) -> list[str]:
    """The page's lines outside code blocks."""
    lines, fenced = [], False
    for line in page.read_text().splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for line in prose_lines(page):
        if match := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line):
            anchor = slug(match.group(1))
            count = 1
            while anchor in found:  # a repeated heading gets _1, _2, ...
                anchor = f"{slug(match.group(1))}_{count}"
                count += 1
            found.add(anchor)
    return found


def test_headings_become_the_anchors_the_docs_site_makes() -> None:
    assert slug("`GET /v1/monitoring/drift?last=N` or `?since=D`") == (
        "get-v1monitoringdriftlastn-or-sinced"
    )
    assert slug("Drift, OOD and accuracy on real shifts") == "drift-ood-and-accuracy-on-real-shifts"
    assert slug("The log's rows") == "the-logs-rows"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_a_file_and_a_heading(page: Path) -> None:
    broken = []
    for line in prose_lines(page):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{target}: no such heading in {linked.name}")
    assert broken == []
