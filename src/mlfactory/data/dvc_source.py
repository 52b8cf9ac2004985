"""Data versioned with DVC: `dvc:PATH[@REV]` and `dvc:REPO//PATH[@REV]`.

PATH is a folder (one sub-folder per class) or a table tracked by DVC (or plain Git) in a Git
repository; REV is a Git revision (tag, branch, commit), `HEAD` when left out, so a training
run reads what was committed, never uncommitted changes. REPO is the repository's Git URL or
path; without it, the repository around the working directory. DVC resolves the revision,
reads the `.dvc` file committed there and fetches the data from the DVC cache or the
repository's default remote (a local folder, S3, GCS, ...): `DVCFileSystem`, the engine of
`dvc get`, does all of it.

The folder is materialised once per content (the output's DVC md5) under the data cache. The
dataset's `version` is the source with the revision resolved to its commit
(`dvc:data/digits@3f2a...`): it names exactly this data, and training records it in MLflow and
in the bundle.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlfactory.data.raw import RawSource, SourceContext
from mlfactory.data.remote import read_tree
from mlfactory.data.staging import build_once
from mlfactory.errors import DataError, cloud_storage_errors, first_line
from mlfactory.output import phase_log

DVC_REQUIREMENT = "dvc==3.67.1"
URL_SCHEME = re.compile(r"^[A-Za-z][\w.+-]*://")
# DVC's message for a remote whose plugin is missing: "... requires 'dvc-s3' to be installed".
PLUGIN = re.compile(r"requires 'dvc-(\w+)'")
# Git's refusal of a checkout another user owns: libgit2's words (DVC reads through pygit2), and
# the git command's. Both name the folder.
NOT_OWNED = re.compile(
    r"repository path '(?P<lib>[^']+)' is not owned by current user"
    r"|dubious ownership in repository at '(?P<cli>[^']+)'"
)


@dataclass(frozen=True)
class DvcRef:
    """What a `dvc:` source names: a path in a repository at a revision."""

    repo: str | None  # None: the repository around the working directory
    path: str
    rev: str

    def pinned(self, commit: str) -> str:
        """The source string naming this data at `commit`."""
        where = f"{self.repo}//{self.path}" if self.repo else self.path
        return f"dvc:{where}@{commit}"


def parse_dvc_source(spec: str) -> DvcRef:
    """Split `[REPO//]PATH[@REV]`.

    Raises:
        DataError: no path, or an absolute path inside the repository.
    """
    prefix = URL_SCHEME.match(spec)
    start = prefix.end() if prefix else 0
    cut = spec.find("//", start)
    repo, rest = (spec[:cut], spec[cut + 2 :]) if cut >= 0 else (None, spec)
    path, at, rev = rest.rpartition("@") if "@" in rest else (rest, "", "")
    path = path.strip("/") if repo else path.rstrip("/")
    if not path or (at and not rev):
        raise DataError(
            f"bad DVC source 'dvc:{spec}': use dvc:PATH[@REV] (in this Git repository) or "
            "dvc:REPO//PATH[@REV], e.g. dvc:data/mushrooms@v1"
        )
    if Path(path).is_absolute():
        raise DataError(
            f"bad DVC source 'dvc:{spec}': PATH is relative to the repository's root "
            "(dvc:data/mushrooms, or dvc:/path/to/repo//data/mushrooms for another repository)"
        )
    return DvcRef(repo=repo or None, path=path, rev=rev or "HEAD")


@dataclass(frozen=True)
class DvcVersion:
    """A `dvc:` source resolved: its commit and the DVC md5 of its content (None: Git-tracked)."""

    ref: DvcRef
    commit: str
    md5: str | None

    @property
    def pinned(self) -> str:
        return self.ref.pinned(self.commit)

    @property
    def content_id(self) -> str:
        """What identifies the content: its DVC md5, or the commit for a Git-tracked path."""
        return self.md5 or f"git:{self.commit}"


def _filesystem(ref: DvcRef) -> Any:
    try:
        from dvc.api import DVCFileSystem
        from dvc.exceptions import DvcException
    except ImportError:
        raise DataError(
            f"dvc: sources need DVC: pip install '{DVC_REQUIREMENT}' (with the extra of your "
            "remote, e.g. 'dvc[s3]' or 'dvc[gs]')"
        ) from None
    where = f"repository {ref.repo}" if ref.repo else "the Git repository of the working directory"
    try:
        fs = DVCFileSystem(url=ref.repo, rev=ref.rev)
        fs.repo  # noqa: B018  (opens the repository: clones a URL, resolves the revision)
    except DvcException as exc:
        reason = str(exc) or type(exc).__name__
        if type(exc).__name__ == "CloneError":
            raise DataError(
                f"dvc: cannot clone {where}: check its URL or path, and your access to it"
            ) from None
        if "not a git repository" in reason:
            raise DataError(
                f"dvc: {reason}: run from inside the repository that tracks the data, or name "
                "it: dvc:REPO//PATH[@REV]"
            ) from None
        if type(exc).__name__ == "RevError":
            raise DataError(f"dvc: {reason} in {where}: use a tag, branch or commit") from None
        raise DataError(f"dvc: {where}: {reason}") from None
    except Exception as exc:  # pygit2's GitError: no DvcException
        refusal = not_owned_error(exc)
        if refusal is None:
            raise
        raise refusal from None
    return fs


def not_owned_error(exc: BaseException) -> DataError | None:
    """Git refuses a checkout that another user owns (root in a container, on a folder mounted
    from the host): the error that names the two ways out; None for any other error."""
    match = NOT_OWNED.search(str(exc))
    if match is None:
        return None
    folder = match.group("lib") or match.group("cli")
    return DataError(
        f"dvc: Git refuses to read the repository {folder}: it belongs to another user than "
        f"this one. Trust it with `git config --global --add safe.directory {folder}`, or run "
        "as the folder's owner"
    )


def resolve_version(ref: DvcRef) -> tuple[DvcVersion, Any]:
    """The commit `ref.rev` names and the md5 DVC recorded there for `ref.path`.

    Raises:
        DataError: DVC is not installed, the repository or revision does not exist, or the
            path is not in the repository at that revision.
    """
    fs = _filesystem(ref)
    commit = fs.repo.get_rev()
    try:
        info = fs.info(ref.path)
    except FileNotFoundError:
        raise DataError(
            f"dvc: {ref.path} is not in the repository at {ref.rev} ({commit[:12]}): commit its "
            ".dvc file (dvc add, git add, git commit) or fix the path"
        ) from None
    except ImportError as exc:
        raise missing_plugin(exc) from None
    md5 = info.get("md5") if info.get("dvc_info") or info.get("isout") else None
    return DvcVersion(ref=ref, commit=commit, md5=md5), fs


def resolve_dvc(spec: str, ctx: SourceContext) -> RawSource:
    """`dvc:[REPO//]PATH[@REV]`: fetch the path at the revision (once per content), read it.

    Raises:
        DataError: as `resolve_version`, or the data is neither in the DVC cache nor on the
            remote (never pushed, or the remote cannot be reached).
    """
    from dvc.exceptions import DvcException
    from dvc_data.index import DataIndexError

    version, fs = resolve_version(parse_dvc_source(spec))
    key = hashlib.sha256(f"{version.ref.repo}\n{version.ref.path}\n{version.content_id}".encode())
    dest = ctx.sources_dir / f"dvc-{key.hexdigest()[:16]}"
    name = Path(version.ref.path).name

    def fetch(tmp: Path) -> list[dict[str, str]]:
        remote = _default_remote_url(fs)
        phase_log.info(
            "data: fetching %s at %s (%s) from %s",
            version.ref.path,
            version.ref.rev,
            version.commit[:12],
            f"the DVC remote {remote}" if remote else "the repository's DVC remote",
        )
        try:
            fs.get(version.ref.path, str(tmp / name), recursive=True)
            _check_md5s(fs, version, tmp / name)
        except ImportError as exc:
            raise missing_plugin(exc) from None
        except (DvcException, DataIndexError, OSError, *cloud_storage_errors()) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else ""
            raise DataError(
                f"dvc: cannot fetch {version.ref.path} at {version.ref.rev} "
                f"({version.commit[:12]}): {type(exc).__name__}: {reason}; is it pushed to the "
                "repository's DVC remote (dvc push), and is the remote reachable?"
            ) from None
        return []

    build_once(dest, fetch, ctx.refresh)
    raw = read_tree(dest / name if (dest / name).is_dir() else dest, ctx, unwrap_root=False)
    raw.version = version.pinned
    return raw


def _check_md5s(fs: Any, version: DvcVersion, local: Path) -> None:
    """Compare every fetched file with the md5 its `.dvc` listing records (DVC does not when it
    fetches: a corrupted object on the remote would be read as this version).

    Raises:
        DataError: a file's content differs from its md5, naming the file.
    """
    from dvc_data.hashfile.hash import file_md5

    path = version.ref.path
    for found, info in fs.find(path, detail=True).items():
        dvc_info = info.get("dvc_info") or {}
        # "md5", or DVC 2's "md5-dos2unix" (a text file hashed with its CRLFs as LFs)
        hash_info = getattr(dvc_info.get("entry"), "hash_info", None)
        name = getattr(hash_info, "name", None) or "md5"
        expected = dvc_info.get(name)
        if not expected:
            continue  # tracked by Git
        found_md5 = file_md5(str(local / posixpath.relpath(found, path)), name=name)
        if found_md5 != expected:
            raise DataError(
                f"dvc: {found} fetched at {version.ref.rev} ({version.commit[:12]}) has md5 "
                f"{found_md5}, but its .dvc file records {expected}: the DVC remote "
                "holds a corrupted copy; push it again from a good copy (dvc push -f) or "
                "repair the remote"
            )


def _default_remote_url(fs: Any) -> str | None:
    """The URL of the repository's default DVC remote, for the line that says what is fetched
    (a dead endpoint can take minutes to give up); None when there is none to name."""
    try:
        config = fs.repo.config
        url = config["remote"][config["core"]["remote"]]["url"]
    except (KeyError, TypeError, AttributeError):
        return None
    return str(url)


def missing_plugin(exc: ImportError) -> DataError:
    """The repository's remote needs a DVC plugin that is not installed (DVC says e.g. "s3 is
    supported, but requires 'dvc-s3' to be installed"): the command that installs it."""
    reason = first_line(exc)
    match = PLUGIN.search(reason)
    if match is None:
        return DataError(f"dvc: {reason}")
    extra = match.group(1)
    return DataError(
        f"dvc: the repository's DVC remote is on {extra}, whose DVC plugin is not installed: "
        f"pip install '{DVC_REQUIREMENT.replace('dvc==', f'dvc[{extra}]==')}'"
    )


def signature_dvc(spec: str, ctx: SourceContext) -> str:
    """The content the source names now: a moved branch or a new HEAD changes it."""
    version, _ = resolve_version(parse_dvc_source(spec))
    return f"{version.pinned}:{version.content_id}"
