"""`dvc:` sources against the real DVC and Git: a repository of real digits, versioned with a
local DVC remote, read back at each revision from a clone that has only the remote."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlfactory.data.dvc_source import parse_dvc_source
from mlfactory.data.prepare import prepare_dataset
from mlfactory.errors import DataError
from tests.data.conftest import MakeRecipe
from tests.data.dvc_repos import dvc, dvc_site_cache, git  # noqa: F401  (the fixture)

pytest.importorskip("dvc")


@dataclass
class VersionedDigits:
    origin: Path  # the repository where the data was added and pushed
    clone: Path  # a clone with no DVC cache and no data: everything comes from the remote
    remote: Path
    commits: dict[str, str]  # tag -> commit
    copies: dict[str, Path]  # tag -> a plain copy of the folder at that tag


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


def _as_dvc2_repository(origin: Path, remote: Path) -> None:
    """Turn a pushed DVC 3 repository into what DVC 2 left: `.dvc` files without `hash: md5`
    (read as DVC 2's `md5-dos2unix`) and the remote's objects at its root."""
    dvc_file = origin / "digits.dvc"
    dvc_file.write_text(dvc_file.read_text().replace("  hash: md5\n", ""))
    git("commit", "-q", "-am", "as DVC 2 wrote it", cwd=origin)
    for stored in list((remote / "files" / "md5").glob("*/*")):
        (remote / stored.parent.name).mkdir(exist_ok=True)
        stored.rename(remote / stored.parent.name / stored.name)


@pytest.mark.parametrize("written_by", ["dvc3", "dvc2"])
def test_a_corrupted_object_on_the_remote_is_refused_naming_the_file(
    written_by: str,
    tmp_path: Path,
    make_recipe: MakeRecipe,
    mnist_pngs: dict[str, list[Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    origin, remote = tmp_path / "origin", tmp_path / "remote"
    for label in "47":
        (origin / "digits" / label).mkdir(parents=True)
        for path in mnist_pngs[label][:4]:
            shutil.copy(path, origin / "digits" / label / path.name)
    git("init", "-q", "-b", "main", cwd=origin)
    dvc("init", "-q", cwd=origin)
    dvc("remote", "add", "-d", "local", str(remote), cwd=origin)
    dvc("add", "-q", "digits", cwd=origin)
    git("add", "-A", cwd=origin)
    git("commit", "-q", "-m", "digits", cwd=origin)
    dvc("push", "-q", cwd=origin)
    layout = remote / "files" / "md5"
    if written_by == "dvc2":
        _as_dvc2_repository(origin, remote)
        layout = remote
    git("clone", "-q", str(origin), str(tmp_path / "clone"), cwd=tmp_path)
    monkeypatch.chdir(tmp_path / "clone")
    assert len(prepare_dataset(make_recipe("dvc:digits")).items) == 8  # read as it was pushed
    shutil.rmtree(tmp_path / "cache")
    victim = mnist_pngs["7"][2]
    md5 = hashlib.md5(victim.read_bytes(), usedforsecurity=False).hexdigest()
    stored = layout / md5[:2] / md5[2:]
    stored.chmod(0o644)
    stored.write_bytes(mnist_pngs["7"][3].read_bytes())  # another real digit: still decodes

    with pytest.raises(DataError) as refused:
        prepare_dataset(make_recipe("dvc:digits"))

    assert str(refused.value).startswith(f"dvc: digits/7/{victim.name} fetched at HEAD (")
    assert f"its .dvc file records {md5}: the DVC remote holds a corrupted copy" in str(
        refused.value
    )
    assert "\n" not in str(refused.value)
    assert not list((tmp_path / "cache" / "_sources").glob("dvc-*"))


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="only root can give a folder to another user",
)
def test_a_checkout_another_user_owns_is_one_line_naming_safe_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root in the training container, reading a checkout mounted from the host."""
    from typer.testing import CliRunner

    from mlfactory.cli import app

    repo = tmp_path / "repo"
    (repo / "data" / "notes" / "a").mkdir(parents=True)
    (repo / "data" / "notes" / "a" / "one.txt").write_text("one")
    git("init", "-q", "-b", "main", cwd=repo)
    dvc("init", "-q", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "notes", cwd=repo)
    shutil.chown(repo, 1000, 1000)
    for inside in repo.rglob("*"):
        os.chown(inside, 1000, 1000, follow_symlinks=False)
    home = tmp_path / "home"  # a global Git config of its own: no safe.directory in it
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    args = ["data", "digits", f"data.source=dvc:{repo}//data/notes", f"data.cache_dir={tmp_path}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"error: dvc: Git refuses to read the repository {repo}: it belongs to another user "
        f"than this one. Trust it with `git config --global --add safe.directory {repo}`, or "
        "run as the folder's owner\n"
    )
    # The fix it names is the fix: in a new process (libgit2 reads HOME once per process)
    (home / ".gitconfig").write_text(f"[safe]\n\tdirectory = {repo}\n")
    resolve = (
        "from mlfactory.data.dvc_source import parse_dvc_source, resolve_version\n"
        f"print(resolve_version(parse_dvc_source('{repo}//data/notes'))[0].commit)"
    )
    resolved = subprocess.run(
        [sys.executable, "-c", resolve], capture_output=True, text=True, timeout=120, check=True
    )
    assert resolved.stdout.strip() == git("rev-parse", "HEAD", cwd=repo).split()[-1]
