"""kaggle:<owner>/<dataset> against a local stand-in for the Kaggle API, and read_tree layouts."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from mlfactory.config.schema import DataConfig, RecipeConfig
from mlfactory.data import remote
from mlfactory.data.downloads import download, without_query_secrets
from mlfactory.data.prepare import prepare_dataset
from mlfactory.data.raw import SourceContext
from mlfactory.data.remote import TEXT_BESIDE_TABLES, read_tree, resolve_kaggle, resolve_url
from mlfactory.errors import DataError
from mlfactory.modalities import get_modality

from .local_http import Server


def _ctx(source: str, cache: Path, modality: str = "image") -> SourceContext:
    return SourceContext(DataConfig(source=source, cache_dir=str(cache)), get_modality(modality))


def _mushroom_zip(mnist_pngs: dict[str, list[Path]]) -> bytes:
    """Kaggle's mushroom layout (a doubled wrapper folder), filled with real digit images."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for label, genus in (("3", "Agaricus"), ("8", "Boletus")):
            for path in mnist_pngs[label][:5]:
                zf.writestr(f"Mushrooms/Mushrooms/{genus}/{path.name}", path.read_bytes())
        zf.writestr("__MACOSX/._Mushrooms", b"junk")
    return buffer.getvalue()


@pytest.fixture
def kaggle_api(http_server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """The local server as the Kaggle API, with credentials set in the environment."""
    monkeypatch.setattr(remote, "KAGGLE_API", http_server.url("/api/v1"))
    monkeypatch.setenv("KAGGLE_USERNAME", "ada")
    monkeypatch.setenv("KAGGLE_KEY", "s3cret")
    http_server.auth = "Basic " + base64.b64encode(b"ada:s3cret").decode()
    return http_server


def test_missing_credentials_name_the_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.setenv("KAGGLE_KEY", "k")
    with pytest.raises(DataError, match=r"set KAGGLE_USERNAME and KAGGLE_KEY in the environment"):
        resolve_kaggle("owner/data", _ctx("kaggle:owner/data", tmp_path))


def test_malformed_reference(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"use kaggle:<owner>/<dataset>"):
        resolve_kaggle("just-a-name", _ctx("kaggle:just-a-name", tmp_path))


def test_kaggle_download_sends_credentials_and_reads_the_layout(
    kaggle_api: Server,
    mnist_pngs: dict[str, list[Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kaggle_api.routes["/api/v1/datasets/download/maysee/mushrooms"] = _mushroom_zip(mnist_pngs)
    ctx = _ctx("kaggle:maysee/mushrooms", tmp_path)

    found = resolve_kaggle("maysee/mushrooms", ctx)

    assert Counter(item.label for item in found.items) == {"Agaricus": 5, "Boletus": 5}
    assert kaggle_api.seen[0][1]["Authorization"] == kaggle_api.auth
    monkeypatch.delenv("KAGGLE_KEY")  # already downloaded: no credentials needed
    assert len(resolve_kaggle("maysee/mushrooms", ctx).items) == 10
    assert len(kaggle_api.seen) == 1


def test_refused_credentials_and_unknown_sets_are_explained(
    kaggle_api: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(DataError, match=r"no Kaggle data set kaggle:someone/nothing \(HTTP 404\)"):
        resolve_kaggle("someone/nothing", _ctx("kaggle:someone/nothing", tmp_path))
    monkeypatch.setenv("KAGGLE_KEY", "wrong")
    with pytest.raises(DataError, match=r"Kaggle refused kaggle:a/b \(HTTP 401\): check KAGG"):
        resolve_kaggle("a/b", _ctx("kaggle:a/b", tmp_path))


def test_credentials_are_not_forwarded_to_another_host(http_server: Server, tmp_path: Path) -> None:
    # Kaggle answers with a redirect to signed storage on another host.
    http_server.routes["/api/file"] = ("redirect", http_server.url("/storage/file", "localhost"))
    http_server.routes["/storage/file"] = b"payload"

    download(http_server.url("/api/file"), tmp_path / "f", headers={"Authorization": "Basic x"})

    assert (tmp_path / "f").read_bytes() == b"payload"
    assert http_server.seen[0][1].get("Authorization") == "Basic x"
    assert "Authorization" not in http_server.seen[1][1]


def test_text_trees_use_the_tables_that_have_the_columns(
    reuters_sample: Path, tmp_path: Path
) -> None:
    root = tmp_path / "extracted" / "news-dataset"
    root.mkdir(parents=True)
    rows = [json.loads(line) for line in reuters_sample.read_text().splitlines()]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:30]))
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[30:]))
    (root / "sample_submission.jsonl").write_text('{"id": 1, "prediction": "ship"}\n')

    found = read_tree(tmp_path / "extracted", _ctx("x", tmp_path, modality="text"))

    assert len(found.items) == 36


def test_a_table_that_cannot_be_used_beside_good_ones_is_reported(
    reuters_sample: Path, tmp_path: Path
) -> None:
    root = tmp_path / "tables"
    root.mkdir()
    rows = [json.loads(line) for line in reuters_sample.read_text().splitlines()]
    (root / "good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "other.csv").write_text("review,stars\ngood,5\n")
    (root / "latin.csv").write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1"))

    found = read_tree(root, _ctx("x", tmp_path, modality="text"))

    assert len(found.items) == 36
    reasons = {Path(s["path"]).name: s["reason"] for s in found.skipped}
    assert reasons["other.csv"].startswith("table left out: column 'text'")
    assert reasons["latin.csv"].startswith("table left out: cannot read table")


def test_text_tree_without_usable_tables(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "data.csv").write_text("review,stars\ngood,5\n")
    with pytest.raises(DataError, match=r"no table under .* can be used: column 'text'.*'review'"):
        read_tree(tmp_path / "t", _ctx("x", tmp_path, modality="text"))


def test_a_stray_table_among_class_folders_of_texts_says_why_the_texts_were_not_read(
    reuters_sample: Path, tmp_path: Path
) -> None:
    root = tmp_path / "texts"
    for n, line in enumerate(reuters_sample.read_text().splitlines()[:6]):
        row = json.loads(line)
        (root / row["label"]).mkdir(parents=True, exist_ok=True)
        (root / row["label"] / f"{n}.TXT").write_text(row["text"])
    (root / row["label"] / "counts.csv").write_text("word,count\noil,12\n")

    with pytest.raises(DataError) as refused:
        read_tree(root, _ctx("x", tmp_path, modality="text"))

    assert "column 'text' (data.text_column) not found" in str(refused.value)
    assert str(refused.value).endswith(
        "so its 6 text file(s) were not read: to read the class folders' text files, move the "
        "tables out of the folder)"
    )
    (root / row["label"] / "counts.csv").unlink()
    assert len(read_tree(root, _ctx("x", tmp_path, modality="text")).items) == 6


def test_text_files_beside_a_usable_table_are_reported_unread(
    reuters_sample: Path, make_recipe: Callable[..., RecipeConfig], tmp_path: Path
) -> None:
    root = tmp_path / "tf"
    rows = [json.loads(line) for line in reuters_sample.read_text().splitlines()]
    for n, row in enumerate(rows[:10]):
        (root / row["label"]).mkdir(parents=True, exist_ok=True)
        (root / row["label"] / f"{n}.txt").write_text(row["text"])
    table = "".join(json.dumps(row) + "\n" for row in rows[10:30])
    (root / rows[0]["label"] / "meta.jsonl").write_text(table)

    dataset = prepare_dataset(make_recipe(root, modality="text"))

    assert len(dataset.items) == len({row["text"] for row in rows[10:30]})
    unread = {s["path"]: s["reason"] for s in dataset.skipped}
    assert sorted(unread) == sorted(str(p) for p in root.glob("*/*.txt")) and len(unread) == 10
    assert set(unread.values()) == {TEXT_BESIDE_TABLES}


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://h/d.zip?dl=1", "https://h/d.zip?dl=1"),
        (
            "https://h/d.zip?sv=2&sig=Zz%3D&se=1#sha256=ab",
            "https://h/d.zip?sv=2&sig=***&se=1#sha256=ab",
        ),
        ("https://h/d.zip?X-Goog-Signature=1&x=%2F", "https://h/d.zip?X-Goog-Signature=***&x=%2F"),
        (
            "https://h/d.zip?Signature=1&Key-Pair-Id=K&Policy=P",
            "https://h/d.zip?Signature=***&Key-Pair-Id=***&Policy=***",
        ),
        ("https://h/d.zip?token", "https://h/d.zip?token"),  # no value: nothing to hide
        (
            "https://h/d.zip?access_key=AK&client_secret=CS&sslpassword=SP&x=1",
            "https://h/d.zip?access_key=***&client_secret=***&sslpassword=***&x=1",
        ),
        ("https://h/cb#access_token=zzz&state=s", "https://h/cb#access_token=***&state=s"),
        ("https://h/d.zip?dl=1#id_token=zzz", "https://h/d.zip?dl=1#id_token=***"),
        ("https://h/d.zip#sha256=ab", "https://h/d.zip#sha256=ab"),  # a checksum, not a secret
    ],
)
def test_a_signed_url_is_stored_with_its_credentials_masked(url: str, stored: str) -> None:
    assert without_query_secrets(url) == stored


def test_a_signed_url_as_a_run_stores_it_finds_its_download_in_the_cache(
    http_server: Server, mnist_pngs: dict[str, list[Path]], tmp_path: Path
) -> None:
    """run.json and bundle.json keep a signed URL with its signature masked: `--resume` and a
    bundle's data (evaluate, compare) read the download that the signed URL made; without it,
    one error says to give the signed URL again (nothing is sent with `***` as a signature)."""
    path = "/d.zip?X-Amz-Date=20261206T000000Z&X-Amz-Signature=s3cr3t"
    http_server.routes[path] = _mushroom_zip(mnist_pngs)
    signed, cache = http_server.url(path), tmp_path / "cache"
    assert len(resolve_url(signed, _ctx(signed, cache)).items) == 10
    stored = without_query_secrets(signed)
    assert stored.endswith("X-Amz-Signature=***")
    assert len(resolve_url(stored, _ctx(stored, cache)).items) == 10
    assert len(http_server.seen) == 1
    with pytest.raises(DataError) as caught:
        resolve_url(stored, _ctx(stored, tmp_path / "other-cache"))
    assert str(caught.value).startswith(
        f"{http_server.url('/d.zip')} is a signed URL stored without its signature (*** in its "
    )
    assert "give the signed URL again" in str(caught.value) and "s3cr3t" not in str(caught.value)
    assert len(http_server.seen) == 1
