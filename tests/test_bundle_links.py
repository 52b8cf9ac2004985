"""A bundle's files are its own: symbolic links inside it are refused by every load and copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlfactory.bundle import copy_bundle, load_bundle
from mlfactory.cli import app
from mlfactory.errors import BundleError
from tests.serving.tiny_bundles import tiny_bundle
from tests.test_cli import assert_one_line_error

runner = CliRunner()


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside the bundle, standing for ~/.aws/credentials."""
    path = tmp_path / "home" / ".aws" / "credentials"
    path.parent.mkdir(parents=True)
    path.write_text("aws_secret_access_key = s3cr3t\n")
    return path


def test_fetch_refuses_a_link_to_a_file_outside_and_writes_nothing(
    tmp_path: Path, secret: Path
) -> None:
    source = tiny_bundle(tmp_path / "b", "image")
    (source / "README.txt").symlink_to(secret)
    out = tmp_path / "fetched"
    result = runner.invoke(app, ["fetch", str(source), "--out", str(out)])
    assert_one_line_error(result, "holds symbolic links (README.txt)")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary


@pytest.mark.parametrize("link", ["extra", "assets/home"])
def test_a_link_to_a_folder_outside_is_refused(tmp_path: Path, secret: Path, link: str) -> None:
    source = tiny_bundle(tmp_path / "b", "image")
    (source / link).parent.mkdir(exist_ok=True)
    (source / link).symlink_to(secret.parent.parent, target_is_directory=True)
    with pytest.raises(BundleError, match=rf"holds symbolic links \({link}\)"):
        load_bundle(source)
    with pytest.raises(BundleError, match=rf"holds symbolic links \({link}\)"):
        copy_bundle(source, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


@pytest.mark.parametrize("name", ["model.onnx", "profile.npz"])
def test_a_model_or_profile_read_through_a_link_is_refused(tmp_path: Path, name: str) -> None:
    """The model and the profile are read from the bundle itself, never through a link out."""
    source = tiny_bundle(tmp_path / "b", "image")
    elsewhere = tmp_path / f"elsewhere-{name}"
    if (source / name).exists():
        (source / name).rename(elsewhere)
    else:
        elsewhere.write_bytes(b"not a profile")
    (source / name).symlink_to(elsewhere)
    with pytest.raises(BundleError, match=rf"holds symbolic links \({name}\): a bundle's files"):
        load_bundle(source)


def test_a_link_inside_pointing_inside_is_refused_too(tmp_path: Path) -> None:
    """One rule, simple to state: no links at all (a copy would follow or break them)."""
    source = tiny_bundle(tmp_path / "b", "image")
    os.symlink("bundle.json", source / "meta.json")
    with pytest.raises(BundleError, match=r"meta\.json"):
        load_bundle(source)


def test_the_bundle_folder_itself_may_be_a_link(tmp_path: Path) -> None:
    source = tiny_bundle(tmp_path / "b", "image")
    (tmp_path / "current").symlink_to(source, target_is_directory=True)
    assert load_bundle(tmp_path / "current").meta.name == load_bundle(source).meta.name
    copy_bundle(tmp_path / "current", tmp_path / "copy")
    assert not any(path.is_symlink() for path in (tmp_path / "copy").rglob("*"))
    assert load_bundle(tmp_path / "copy").meta.labels == load_bundle(source).meta.labels
