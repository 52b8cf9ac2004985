"""`dvc:` sources against the real DVC and Git: a repository of real digits, versioned with a
local DVC remote, read back at each revision from a clone that has only the remote."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlfactory.data.dvc_source import parse_dvc_source
from mlfactory.data.prepare import prepare_dataset
from mlfactory.errors import DataError
from mlfactory.serving.process import free_port
from tests.data.conftest import MakeRecipe
from tests.s3 import s3_endpoint  # noqa: F401  (the fixture)

pytest.importorskip("dvc")


def run(*command: str, cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def git(*args: str, cwd: Path) -> str:
    return run("git", "-c", "user.name=t", "-c", "user.email=t@t", *args, cwd=cwd)


def dvc(*args: str, cwd: Path) -> str:
    return run(sys.executable, "-m", "dvc", *args, cwd=cwd)


@dataclass
class VersionedDigits:
    origin: Path  # the repository where the data was added and pushed
    clone: Path  # a clone with no DVC cache and no data: everything comes from the remote
    remote: Path
    commits: dict[str, str]  # tag -> commit
    copies: dict[str, Path]  # tag -> a plain copy of the folder at that tag


@pytest.fixture(scope="module", autouse=True)
def dvc_site_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """DVC's site cache in a temporary folder, not /var/tmp/dvc."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path_factory.mktemp("dvc-site-cache")))
        yield


@pytest.fixture(scope="module")
def versioned_digits(
    tmp_path_factory: pytest.TempPathFactory, mnist_pngs: dict[str, list[Path]]
) -> VersionedDigits:
    """data/digits at v1 (3 digits, 6 each), v2 (a fourth digit) and v3 (never pushed)."""
    root = tmp_path_factory.mktemp("dvc")
    origin, remote = root / "origin", root / "remote"
    origin.mkdir()
    git("init", "-q", "-b", "main", cwd=origin)
    dvc("init", "-q", cwd=origin)
    dvc("remote", "add", "-d", "local", str(remote), cwd=origin)
    commits, copies = {}, {}
    for tag, labels in (("v1", "012"), ("v2", "0123"), ("v3", "01234")):
        for label in labels:
            folder = origin / "data" / "digits" / label
            folder.mkdir(parents=True, exist_ok=True)
            for path in mnist_pngs[label][:6]:
                shutil.copy(path, folder / path.name)
        dvc("add", "-q", "data/digits", cwd=origin)
        git("add", "-A", cwd=origin)
        git("commit", "-q", "-m", f"digits {tag}", cwd=origin)
        git("tag", tag, cwd=origin)
        if tag != "v3":
            dvc("push", "-q", cwd=origin)
        commits[tag] = git("rev-parse", "HEAD", cwd=origin)
        copies[tag] = shutil.copytree(origin / "data" / "digits", root / "copies" / tag)
    clone = root / "clone"
    git("clone", "-q", str(origin), str(clone), cwd=root)
    return VersionedDigits(origin, clone, remote, commits, copies)


@pytest.mark.parametrize(
    ("spec", "repo", "path", "rev"),
    [
        ("data/digits", None, "data/digits", "HEAD"),
        ("data/digits/@v1", None, "data/digits", "v1"),
        ("/srv/repo//data/digits@v2", "/srv/repo", "data/digits", "v2"),
        ("https://github.com/o/r.git//data/x@main", "https://github.com/o/r.git", "data/x", "main"),
        ("git@github.com:o/r.git//data/x", "git@github.com:o/r.git", "data/x", "HEAD"),
    ],
)
def test_parse(spec: str, repo: str | None, path: str, rev: str) -> None:
    ref = parse_dvc_source(spec)
    assert (ref.repo, ref.path, ref.rev) == (repo, path, rev)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("", "use dvc:PATH[@REV]"), ("data@", "use dvc:PATH[@REV]"), ("/abs", "relative to")],
)
def test_parse_refuses(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_dvc_source(spec)


def test_each_revision_reads_its_own_data_from_the_remote(
    versioned_digits: VersionedDigits,
    make_recipe: MakeRecipe,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(versioned_digits.clone)
    for tag, labels in (("v1", ["0", "1", "2"]), ("v2", ["0", "1", "2", "3"])):
        dataset = prepare_dataset(make_recipe(f"dvc:data/digits@{tag}", name=tag))
        assert dataset.labels == labels
        assert dataset.version == f"dvc:data/digits@{versioned_digits.commits[tag]}"
        # The same items, labels and split as the folder had at that revision.
        plain = prepare_dataset(make_recipe(versioned_digits.copies[tag], name=f"plain-{tag}"))
        assert dataset.fingerprint == plain.fingerprint
    assert not (versioned_digits.clone / "data" / "digits").exists()


def test_another_repository_by_path(
    versioned_digits: VersionedDigits,
    make_recipe: MakeRecipe,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # not a Git repository
    dataset = prepare_dataset(make_recipe(f"dvc:{versioned_digits.clone}//data/digits@v1"))
    assert dataset.labels == ["0", "1", "2"]
    assert (
        dataset.version
        == f"dvc:{versioned_digits.clone}//data/digits@" + (versioned_digits.commits["v1"])
    )


def test_head_is_the_committed_version_not_the_workspace(
    versioned_digits: VersionedDigits,
    make_recipe: MakeRecipe,
    mnist_pngs: dict[str, list[Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    work = versioned_digits.origin.parent / "work"
    git("clone", "-q", str(versioned_digits.origin), str(work), cwd=work.parent)
    git("checkout", "-q", "v2", cwd=work)
    dvc("pull", "-q", cwd=work)
    shutil.rmtree(work / "data" / "digits" / "3")  # an uncommitted change
    monkeypatch.chdir(work)
    recipe = make_recipe("dvc:data/digits")
    dataset = prepare_dataset(recipe)
    assert dataset.labels == ["0", "1", "2", "3"]
    assert dataset.version == f"dvc:data/digits@{versioned_digits.commits['v2']}"

    # A new commit is a new version: the cached dataset is not reused.
    for path in mnist_pngs["9"][:6]:
        (work / "data" / "digits" / "9").mkdir(exist_ok=True)
        shutil.copy(path, work / "data" / "digits" / "9" / path.name)
    dvc("add", "-q", "data/digits", cwd=work)
    git("commit", "-q", "-am", "drop 3, add 9", cwd=work)
    again = prepare_dataset(recipe)
    assert again.labels == ["0", "1", "2", "9"]
    assert again.version == f"dvc:data/digits@{git('rev-parse', 'HEAD', cwd=work)}"


def test_errors_are_one_line(
    versioned_digits: VersionedDigits,
    make_recipe: MakeRecipe,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(versioned_digits.clone)
    cases = {
        "dvc:data/digits@v9": "unknown Git revision 'v9'",
        "dvc:data/pictures@v1": "data/pictures is not in the repository at v1",
        # v3 was committed but never pushed: the clone has no way to get it.
        "dvc:data/digits@v3": "is it pushed to the repository's DVC remote",
        f"dvc:{tmp_path / 'nothing'}//data/digits": "cannot clone repository",
    }
    for spec, message in cases.items():
        with pytest.raises(DataError, match=message) as caught:
            prepare_dataset(make_recipe(spec))
        assert "\n" not in str(caught.value)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="is not a git repository: run from inside"):
        prepare_dataset(make_recipe("dvc:data/digits"))
    # Nothing half-fetched is left to be trusted later.
    assert not list((tmp_path / "cache" / "_sources").glob("dvc-*"))


def test_a_table_at_a_revision(
    tmp_path: Path,
    make_recipe: MakeRecipe,
    reuters_sample: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = tmp_path / "texts"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    dvc("init", "-q", cwd=repo)
    shutil.copy(reuters_sample, repo / "articles.jsonl")
    dvc("add", "-q", "articles.jsonl", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "articles", cwd=repo)
    monkeypatch.chdir(repo)
    dataset = prepare_dataset(make_recipe("dvc:articles.jsonl", modality="text"))
    plain = prepare_dataset(make_recipe(reuters_sample, modality="text", name="plain"))
    assert dataset.labels == ["crude", "grain", "ship"]
    assert dataset.fingerprint == plain.fingerprint


def test_a_training_run_records_the_version(
    versioned_digits: VersionedDigits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from mlfactory.card_report import render_page
    from mlfactory.config.loader import load_recipe
    from mlfactory.model_card import model_card
    from mlfactory.training.train import train
    from tests.conftest import fast_digits_overrides

    monkeypatch.chdir(versioned_digits.clone)
    overrides = fast_digits_overrides(Path("unused"), tmp_path, epochs=1)
    overrides[0] = "data.source=dvc:data/digits@v1"
    result = train(load_recipe("digits", overrides), tmp_path / "run", progress=False)
    version = f"dvc:data/digits@{versioned_digits.commits['v1']}"
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}").get_run(result.mlflow_run_id)
    assert run.data.tags["data_version"] == version
    assert run.data.params["data.source"] == "dvc:data/digits@v1"
    card = model_card(result.bundle)
    assert card["data"]["version"] == version
    assert f"<dd><code>{version}</code></dd>" in render_page(card)


def test_data_command_prints_the_version(
    versioned_digits: VersionedDigits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mlfactory.cli import app

    monkeypatch.chdir(versioned_digits.clone)
    args = ["data", "digits", "data.source=dvc:data/digits@v2", f"data.cache_dir={tmp_path}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"version dvc:data/digits@{versioned_digits.commits['v2']}\n" in result.output
    result = CliRunner().invoke(app, [*args[:2], "data.source=dvc:data/digits@v9"])
    assert result.exit_code == 2
    assert result.output.startswith("error: dvc: unknown Git revision 'v9'")


def test_a_remote_in_an_s3_bucket(
    s3_endpoint: str,  # noqa: F811
    mnist_pngs: dict[str, list[Path]],
    make_recipe: MakeRecipe,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The remote a team uses in production: an S3 bucket (DVC's S3 plugin, s3fs and boto3,
    all over HTTP to an S3 server on loopback); the clone has only the bucket to read from."""
    import boto3

    bucket = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket.create_bucket(Bucket="mlfactory-data")
    origin = tmp_path / "origin"
    origin.mkdir()
    git("init", "-q", "-b", "main", cwd=origin)
    dvc("init", "-q", cwd=origin)
    dvc("remote", "add", "-d", "storage", "s3://mlfactory-data/dvc", cwd=origin)
    dvc("remote", "modify", "storage", "endpointurl", s3_endpoint, cwd=origin)
    for label in "012":
        (origin / "data" / "digits" / label).mkdir(parents=True)
        for path in mnist_pngs[label][:6]:
            shutil.copy(path, origin / "data" / "digits" / label / path.name)
    dvc("add", "-q", "data/digits", cwd=origin)
    git("add", "-A", cwd=origin)
    git("commit", "-q", "-m", "digits", cwd=origin)
    dvc("push", "-q", cwd=origin)
    listed = bucket.list_objects_v2(Bucket="mlfactory-data", Prefix="dvc/")
    assert listed["KeyCount"] == 18 + 1  # every image, and the folder's .dir listing

    clone = tmp_path / "clone"
    git("clone", "-q", str(origin), str(clone), cwd=tmp_path)
    monkeypatch.chdir(clone)
    dataset = prepare_dataset(make_recipe("dvc:data/digits", name="from-s3"))
    assert dataset.labels == ["0", "1", "2"]
    assert dataset.version == f"dvc:data/digits@{git('rev-parse', 'HEAD', cwd=origin)}"
    plain = prepare_dataset(make_recipe(origin / "data" / "digits", name="plain"))
    assert dataset.fingerprint == plain.fingerprint
    assert not (clone / ".dvc" / "cache").exists()  # read from the bucket, not a local cache

    # Without DVC's S3 plugin (`mlfactory[dvc]` alone): one line with the command that adds it.
    without_plugin = (
        "import sys; sys.modules['dvc_s3'] = None; from mlfactory.cli import main; "
        "main(['data', 'image', 'data.source=dvc:data/digits', 'data.cache_dir=c3'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", without_plugin], cwd=clone, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == (
        "error: dvc: the repository's DVC remote is on s3, whose DVC plugin is not installed: "
        "pip install 'dvc[s3]==3.67.1'"
    )

    # The bucket's endpoint down (a port nobody listens on): one line that says so. (boto3
    # retries each object 5 times by default, about 20 s here; once is enough to see the error.)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    down = f"http://127.0.0.1:{free_port()}"
    dvc("remote", "modify", "--local", "storage", "endpointurl", down, cwd=clone)
    with pytest.raises(DataError) as caught:
        prepare_dataset(make_recipe("dvc:data/digits", name="down", cache_dir=tmp_path / "c2"))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("dvc: cannot fetch data/digits at HEAD")
    assert "EndpointConnectionError: Could not connect to the endpoint URL" in message
