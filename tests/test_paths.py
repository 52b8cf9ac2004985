"""Where one path lies against another, through symbolic and hard links."""

from __future__ import annotations

import os
from pathlib import Path

from mlfactory.paths import is_within, same_file


def test_a_folder_holds_itself_and_what_lies_below_it_not_a_sibling_of_the_same_prefix(
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "sub").mkdir(parents=True)
    (tmp_path / "bundle-2").mkdir()
    assert is_within(bundle, bundle)
    assert is_within(bundle / "sub" / "report.html", bundle)  # need not exist
    assert not is_within(tmp_path / "bundle-2" / "report.html", bundle)
    assert not is_within(tmp_path, bundle)


def test_a_link_is_judged_by_where_it_leads(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (tmp_path / "alias").symlink_to(bundle)
    assert is_within(tmp_path / "alias" / "out.csv", bundle)
    assert is_within(bundle / "out.csv", tmp_path / "alias")


def test_one_file_by_its_path_a_symbolic_link_or_a_hard_link_and_not_a_copy(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log.db"
    log.write_bytes(b"rows")
    (tmp_path / "soft.db").symlink_to(log)
    os.link(log, tmp_path / "hard.db")
    (tmp_path / "copy.db").write_bytes(b"rows")
    assert same_file(log, tmp_path / "sub" / ".." / "log.db")
    assert same_file(tmp_path / "soft.db", log)
    assert same_file(tmp_path / "hard.db", log)
    assert not same_file(tmp_path / "copy.db", log)
    assert not same_file(tmp_path / "absent.db", log)
