"""Recipe files and overrides written to hurt: each is one `error:` line and exit 2, at once.

YAML is read event by event before Hydra sees it, so an alias bomb ("billion laughs") is refused
without being expanded; malformed YAML names the line and column; an empty recipe or an empty
data source is refused rather than quietly meaning the default data or the current folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlfactory.cli import app
from tests.test_cli import assert_one_line_error

runner = CliRunner()
HEADER = "defaults:\n  - recipe_schema\n  - _self_\n"


def alias_bomb(levels: int = 8) -> str:
    """Each level lists the previous one ten times: 10**levels strings once expanded."""
    lines = [HEADER, 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels + 1):
        previous = ", ".join([f"*l{level - 1}"] * 10)
        lines.append(f"l{level}: &l{level} [{previous}]")
    lines.append(f"name: bomb\nmodality: image\ndescription: *l{levels}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "the recipe file is empty"),
        ("# only a comment\n", "the recipe file is empty"),
        ("- a\n- list\n", "a recipe must be a mapping"),
        (HEADER + "name: x\n  modality: [image\n", ".yaml:5:"),  # malformed: line and column
        (HEADER + "name: 'unterminated\n", "not valid YAML"),
        (HEADER + "name: &n x\nmodality: *n\n", "YAML aliases (*n) are not allowed"),
    ],
)
def test_a_hostile_recipe_file_is_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    recipe = tmp_path / "hostile.yaml"
    recipe.write_text(text)
    assert_one_line_error(runner.invoke(app, ["train", str(recipe)]), fragment)
    assert_one_line_error(runner.invoke(app, ["data", str(recipe)]), fragment)


def test_an_eight_level_alias_bomb_is_refused_unexpanded(tmp_path: Path) -> None:
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(alias_bomb(8))
    assert recipe.stat().st_size < 2000
    # A separate process with a time limit: an expanded bomb would hang, not fail.
    result = subprocess.run(
        [sys.executable, "-m", "mlfactory.cli", "data", str(recipe)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "YAML aliases (*l0) are not allowed" in lines[0]


@pytest.mark.parametrize("source", ["data.source=", "data.source=  "])
def test_an_empty_data_source_is_refused(source: str) -> None:
    assert_one_line_error(runner.invoke(app, ["data", "digits", source]), "data.source")
