"""Sources that download an archive: `http(s)://...` URLs and `kaggle:<owner>/<dataset>`.

Both download once into the cache, extract safely (see `downloads`), delete the archive and
read the extracted tree with `read_tree`, which recognises the usual layouts: wrapper folders,
class folders (split folders merged), or for text, csv/tsv/jsonl tables.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import urllib.parse
from pathlib import Path

from mlfactory.data.downloads import (
    DownloadHTTPError,
    download,
    extract_archive,
    has_masked_secret,
    shown_url,
    without_query_secrets,
)
from mlfactory.data.folders import iter_files, scan_class_folder, skipper, unwrap
from mlfactory.data.raw import RawSource, SourceContext, skip
from mlfactory.data.staging import build_once, is_built
from mlfactory.data.tables import is_table, read_table
from mlfactory.errors import DataError

KAGGLE_API = "https://www.kaggle.com/api/v1"
KAGGLE_REF = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def read_tree(root: Path, ctx: SourceContext, unwrap_root: bool = True) -> RawSource:
    """Candidates of a folder: its tables (when it has any and the modality reads tables) or its
    class folders.

    Args:
        root: the folder (e.g. an extracted archive).
        ctx: the source context (modality, text and label columns).
        unwrap_root: first descend through folders holding a single folder.

    Raises:
        DataError: no class folders, or no table with the configured columns.
    """
    if unwrap_root:
        root = unwrap(root)
    tables, unreadable = [], RawSource()
    if ctx.modality.reads_tables:
        tables = [path for path in iter_files(root, skipper(unreadable.skipped)) if is_table(path)]
    if not tables:
        return scan_class_folder(root, ctx.modality)  # it reports the unreadable folders
    result, errors = unreadable, []
    for table in tables:
        try:
            result.extend(read_table(table, ctx.data.text_column, ctx.data.label_column))
        except DataError as exc:
            errors.append(str(exc))
            result.skipped.append(skip(table, f"table left out: {exc}"))
    texts = _texts_beside(root, ctx)
    if len(errors) == len(tables):
        hint = (
            f" (a folder holding tables is read as tables, so its {len(texts)} text file(s) were "
            "not read: to read the class folders' text files, move the tables out of the folder)"
        )
        raise DataError(f"no table under {root} can be used: {errors[0]}{hint if texts else ''}")
    result.skipped.extend(skip(path, TEXT_BESIDE_TABLES) for path in texts)
    return result


# A folder holding tables is read as its tables; its text files are reported, not lost.
TEXT_BESIDE_TABLES = (
    "a text file in a folder holding tables, which is read as tables: not read (to read the "
    "text files, move the tables out of the folder)"
)


def _texts_beside(root: Path, ctx: SourceContext) -> list[Path]:
    """The files of the modality (text files) under `root`, which its tables leave unread."""
    suffixes = ctx.modality.file_suffixes
    return [path for path in iter_files(root, lambda *_: None) if path.suffix.lower() in suffixes]


def parse_url_source(source: str) -> tuple[str, str | None]:
    """Split `https://host/file.zip#sha256=<hex>` into the URL and the expected digest.

    Errors show the URL as a download does (`shown_url`): no query, fragment or password.

    Raises:
        DataError: a fragment other than `sha256=<64 hex digits>`, or a user name or password
            in the URL (it would be stored with the run's parameters).
    """
    url, _, fragment = source.partition("#")
    if "@" in urllib.parse.urlsplit(url).netloc:
        raise DataError(
            f"{shown_url(url)}: a user name or password in data.source is not sent (it would "
            "be stored with the run): download the archive yourself (curl -u) and set "
            "data.source to the extracted folder, or use a signed URL"
        )
    if not fragment:
        return url, None
    match = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", fragment)
    if match is None:
        name = fragment.partition("=")[0]
        raise DataError(
            f"bad fragment '#{name}=...' in {shown_url(url)}: use #sha256=<64 hex digits>"
        )
    return url, match.group(1).lower()


def _fetch_and_extract(
    url: str,
    archive: Path,
    dest: Path,
    ctx: SourceContext,
    sha256: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    def build(tmp: Path) -> list[dict[str, str]]:
        download(url, archive, sha256=sha256, headers=headers)
        try:
            extract_archive(archive, tmp)
        finally:
            archive.unlink(missing_ok=True)  # the extracted tree is the cache
        return []

    build_once(dest, build, ctx.refresh)


def resolve_url(source: str, ctx: SourceContext) -> RawSource:
    """`http(s)://.../archive.{zip,tar.gz,tgz}[#sha256=...]`: download, extract, read."""
    url, sha256 = parse_url_source(source)
    # A signed URL is stored without its signature: that one finds the download in the cache
    key = hashlib.sha256(without_query_secrets(url).encode()).hexdigest()[:16]
    name = Path(urllib.parse.urlsplit(url).path).name or "archive"
    dest = ctx.sources_dir / f"url-{key}"
    if has_masked_secret(url) and not is_built(dest):
        raise DataError(
            f"{shown_url(url)} is a signed URL stored without its signature (*** in its query, "
            f"as run.json and bundle.json keep it), and its download is not in the cache "
            f"{ctx.sources_dir}: give the signed URL again (a new run's data.source=URL, or "
            "--data URL)"
        )
    _fetch_and_extract(url, ctx.downloads_dir / f"url-{key}-{name}", dest, ctx, sha256=sha256)
    return read_tree(dest, ctx)


def kaggle_credentials() -> tuple[str, str]:
    """KAGGLE_USERNAME and KAGGLE_KEY from the environment.

    Raises:
        DataError: either is unset.
    """
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if not user or not key:
        raise DataError(
            "kaggle: sources need Kaggle API credentials: set KAGGLE_USERNAME and KAGGLE_KEY "
            "in the environment (kaggle.com > Settings > API > Create New Token)"
        )
    return user, key


def resolve_kaggle(ref: str, ctx: SourceContext) -> RawSource:
    """`kaggle:<owner>/<dataset>`: download the data set's zip with the Kaggle API, extract, read.

    Raises:
        DataError: a malformed reference, missing or refused credentials, unknown data set.
    """
    if not KAGGLE_REF.match(ref):
        raise DataError(f"bad Kaggle reference '{ref}': use kaggle:<owner>/<dataset>")
    slug = ref.replace("/", "--")
    dest = ctx.sources_dir / f"kaggle-{slug}"
    if (dest / ".complete.json").is_file() and not ctx.refresh:
        return read_tree(dest, ctx)
    user, key = kaggle_credentials()
    token = base64.b64encode(f"{user}:{key}".encode()).decode()
    url = f"{KAGGLE_API}/datasets/download/{ref}"
    archive = ctx.downloads_dir / f"kaggle-{slug}.zip"
    try:
        _fetch_and_extract(url, archive, dest, ctx, headers={"Authorization": f"Basic {token}"})
    except DownloadHTTPError as exc:
        if exc.code in (401, 403):
            raise DataError(
                f"Kaggle refused kaggle:{ref} (HTTP {exc.code}): check KAGGLE_USERNAME and "
                "KAGGLE_KEY, and accept the data set's rules on its Kaggle page"
            ) from None
        if exc.code == 404:
            raise DataError(f"no Kaggle data set kaggle:{ref} (HTTP 404): check the name") from None
        raise
    return read_tree(dest, ctx)
