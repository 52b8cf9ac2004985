"""URL archives served from 127.0.0.1: download limits, sha256, safe extraction, layouts."""

from __future__ import annotations

import hashlib
import io
import logging
import stat
import tarfile
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlfactory.cli import app
from mlfactory.config.schema import RecipeConfig
from mlfactory.data.downloads import download, extract_archive
from mlfactory.data.prepare import prepare_dataset
from mlfactory.data.remote import parse_url_source
from mlfactory.errors import DataError
from mlfactory.output import PHASE_LOGGER

from .local_http import Server

MakeRecipe = Callable[..., RecipeConfig]


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _tar(members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for member in members:
            payload = (data or {}).get(member.name)
            if payload is not None:
                member.size = len(payload)
            tf.addfile(member, io.BytesIO(payload) if payload is not None else None)
    return buffer.getvalue()


def _digit_files(
    mnist_pngs: dict[str, list[Path]], prefix: str, labels: str, count: int
) -> dict[str, bytes]:
    return {
        f"{prefix}{label}/{path.name}": path.read_bytes()
        for label in labels
        for path in mnist_pngs[label][:count]
    }


def test_zip_url_is_downloaded_extracted_and_prepared(
    http_server: Server,
    make_recipe: MakeRecipe,
    mnist_pngs: dict[str, list[Path]],
    cache_dir: Path,
) -> None:
    archive = _zip(_digit_files(mnist_pngs, "digits-v1/", "017", 12))
    http_server.routes["/files/digits.zip"] = archive
    url = http_server.url("/files/digits.zip")
    sha = hashlib.sha256(archive).hexdigest()

    dataset = prepare_dataset(make_recipe(f"{url}#sha256={sha}"))

    assert dataset.labels == ["0", "1", "7"] and len(dataset.items) == 36
    extracted = cache_dir / "_sources"
    assert all(Path(item.path).is_relative_to(extracted) for item in dataset.items)  # type: ignore[arg-type]
    assert list((cache_dir / "_downloads").iterdir()) == []  # the archive is not kept
    prepare_dataset(make_recipe(f"{url}#sha256={sha}"))
    assert len(http_server.seen) == 1


def test_tar_gz_with_split_folders_is_merged(
    http_server: Server, make_recipe: MakeRecipe, mnist_pngs: dict[str, list[Path]]
) -> None:
    files = _digit_files(mnist_pngs, "train/", "23", 10) | {
        k.replace("train/", "test/"): v
        for k, v in _digit_files(mnist_pngs, "train/", "3", 14).items()
    }
    members = []
    for name in files:
        members.append(tarfile.TarInfo(name))
    http_server.routes["/d.tar.gz"] = _tar(members, files)

    dataset = prepare_dataset(make_recipe(http_server.url("/d.tar.gz")))

    # The first 10 "3"s are in both train/ and test/: identical content is kept once.
    assert Counter(item.label for item in dataset.items) == {"2": 10, "3": 14}
    assert sum(s["reason"].startswith("duplicate of") for s in dataset.skipped) == 10


def test_wrong_sha256_is_refused(http_server: Server, tmp_path: Path) -> None:
    http_server.routes["/a.zip"] = b"PK not really"
    with pytest.raises(DataError, match=r"sha256 of .* is [0-9a-f]{64}, expected 0+"):
        download(http_server.url("/a.zip"), tmp_path / "a.zip", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_the_download_line_and_errors_show_no_secret_of_the_url(
    http_server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every download says what it fetches (a slow server can take minutes), and its errors
    name the URL, without the query (a signed URL's signature, a token)."""
    signed = "/a.zip?X-Amz-Signature=s3cr3t"
    http_server.routes[signed] = b"PK"
    with caplog.at_level(logging.INFO, logger=PHASE_LOGGER):
        download(http_server.url(signed), tmp_path / "a.zip")
    assert (tmp_path / "a.zip").read_bytes() == b"PK"
    shown = http_server.url("/a.zip")
    assert [r.getMessage() for r in caplog.records] == [f"data: downloading {shown}"]
    with pytest.raises(DataError) as caught:
        download(http_server.url(signed), tmp_path / "b.zip", sha256="0" * 64)
    assert str(caught.value).startswith(f"sha256 of {shown} is ")
    with pytest.raises(
        DataError, match=r"^download of http://127.0.0.1:\d+/b.zip failed: HTTP 404"
    ):
        download(http_server.url("/b.zip?token=s3cr3t"), tmp_path / "c.zip")


def test_size_limit_stops_the_download(http_server: Server, tmp_path: Path) -> None:
    http_server.routes["/big.zip"] = b"x" * 5000
    with pytest.raises(DataError, match=r"exceeds the limit of 1000 bytes"):
        download(http_server.url("/big.zip"), tmp_path / "big.zip", max_bytes=1000)
    assert list(tmp_path.iterdir()) == []


def test_size_limit_comes_from_the_environment(
    http_server: Server, make_recipe: MakeRecipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_server.routes["/big.zip"] = b"x" * 5000
    monkeypatch.setenv("MLFACTORY_MAX_DOWNLOAD_BYTES", "100")
    with pytest.raises(DataError, match=r"raise MLFACTORY_MAX_DOWNLOAD_BYTES"):
        prepare_dataset(make_recipe(http_server.url("/big.zip")))


def test_a_bad_size_limit_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFACTORY_MAX_DOWNLOAD_BYTES", "10GB")
    with pytest.raises(DataError, match=r"MLFACTORY_MAX_DOWNLOAD_BYTES=10GB is not a number"):
        download("http://127.0.0.1:9/x.zip", tmp_path / "x.zip")


def test_http_errors_name_the_url(http_server: Server, make_recipe: MakeRecipe) -> None:
    url = http_server.url("/missing.zip")
    with pytest.raises(DataError, match=rf"download of {url} failed: HTTP 404"):
        prepare_dataset(make_recipe(url))


def test_unreachable_host_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"could not download http://127.0.0.1:9/x.zip"):
        download("http://127.0.0.1:9/x.zip", tmp_path / "x.zip")


def test_url_fragments_other_than_sha256_are_refused() -> None:
    assert parse_url_source("https://h/x.zip") == ("https://h/x.zip", None)
    assert parse_url_source("https://h/x.zip#sha256=" + "AB" * 32) == ("https://h/x.zip", "ab" * 32)
    with pytest.raises(DataError, match=r"use #sha256=<64 hex digits>"):
        parse_url_source("https://h/x.zip#md5=abc")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "https://user:PASSWORD@example.invalid/d.zip",
            "error: https://example.invalid/d.zip: a user name or password in data.source is not",
        ),
        (
            "https://example.invalid/d.zip?sig=SECRET#md5=PASSWORD",
            "error: bad fragment '#md5=...' in https://example.invalid/d.zip: use #sha256=",
        ),
    ],
)
def test_secrets_in_a_source_url_stay_off_the_terminal(
    source: str, expected: str, tmp_path: Path
) -> None:
    args = ["data", "text", f"data.source={source}", f"data.cache_dir={tmp_path / 'cache'}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.startswith(expected) and len(result.output.splitlines()) == 1
    assert "PASSWORD" not in result.output and "SECRET" not in result.output


def test_a_url_that_urllib_refuses_is_one_line_without_its_netloc(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^could not download https://h/x.zip: not a valid URL$"):
        download("https://u:PASSWORD@h/x.zip", tmp_path / "x.zip")


# --- extraction -------------------------------------------------------------------------------


@pytest.fixture
def target(tmp_path: Path) -> Path:
    folder = tmp_path / "jail" / "out"
    folder.mkdir(parents=True)
    return folder


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("../evil.png", r"outside the archive \(\.\.\)"),
        ("/tmp/evil.png", "absolute path"),
        ("ok/..\\..\\evil.png", r"outside the archive \(\.\.\)"),
        ("C:/evil.png", "absolute path"),
    ],
)
def test_zip_path_traversal_is_refused(
    tmp_path: Path, target: Path, member: str, message: str
) -> None:
    archive = _write(tmp_path, "bad.zip", _zip({"good/a.png": b"1", member: b"2"}))
    with pytest.raises(DataError, match=message):
        extract_archive(archive, target)
    assert list(target.iterdir()) == []  # checked before anything is written
    assert not (tmp_path / "jail" / "evil.png").exists()


def test_zip_symlink_outside_is_refused(tmp_path: Path, target: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        link = zipfile.ZipInfo("data/passwd")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "../../../etc/passwd")
    archive = _write(tmp_path, "link.zip", buffer.getvalue())
    with pytest.raises(
        DataError, match=r"link 'data/passwd' -> '../../../etc/passwd' points outside"
    ):
        extract_archive(archive, target)


def test_zip_symlink_inside_is_left_out(tmp_path: Path, target: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data/a.txt", "hello")
        link = zipfile.ZipInfo("data/b.txt")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "a.txt")
    extract_archive(_write(tmp_path, "ok.zip", buffer.getvalue()), target)
    assert sorted(p.name for p in (target / "data").iterdir()) == ["a.txt"]


@pytest.mark.parametrize(
    ("kind", "name", "link", "message"),
    [
        (tarfile.SYMTYPE, "data/x", "/etc/passwd", "points outside"),
        (tarfile.SYMTYPE, "data/x", "../../secret", "points outside"),
        (tarfile.LNKTYPE, "data/x", "../secret", r"outside the archive \(\.\.\)"),
        (tarfile.REGTYPE, "../../x", "", r"outside the archive \(\.\.\)"),
        (tarfile.FIFOTYPE, "data/fifo", "", "device/fifo"),
    ],
)
def test_unsafe_tar_members_are_refused(
    tmp_path: Path, target: Path, kind: bytes, name: str, link: str, message: str
) -> None:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, link
    archive = _write(tmp_path, "bad.tar.gz", _tar([member]))
    with pytest.raises(DataError, match=message):
        extract_archive(archive, target)
    assert list(target.iterdir()) == []


def test_tar_symlink_inside_is_extracted(tmp_path: Path, target: Path) -> None:
    real = tarfile.TarInfo("data/a.txt")
    link = tarfile.TarInfo("data/b.txt")
    link.type, link.linkname = tarfile.SYMTYPE, "a.txt"
    extract_archive(_write(tmp_path, "ok.tgz", _tar([real, link], {"data/a.txt": b"hi"})), target)
    assert (target / "data" / "b.txt").read_bytes() == b"hi"


def test_archives_too_large_when_uncompressed_are_refused(tmp_path: Path, target: Path) -> None:
    archive = _write(tmp_path, "bomb.zip", _zip({"zeros.bin": b"\0" * 100_000}))
    assert archive.stat().st_size < 2000
    with pytest.raises(DataError, match=r"more than 10000 bytes uncompressed"):
        extract_archive(archive, target, max_total_bytes=10_000)


def test_not_an_archive(tmp_path: Path, target: Path) -> None:
    with pytest.raises(DataError, match=r"neither a zip nor a tar archive"):
        extract_archive(_write(tmp_path, "page.zip", b"<html>login</html>"), target)
