"""`mlfactory collect`: the inputs users labelled, as a dataset to retrain on.

The server keeps the raw inputs in its input store (`MLFACTORY_INPUT_STORE`, see
`serving.input_store`) and the true labels that came back (`POST /v1/feedback`) in its
prediction log. This joins the two for one model (every version of its name): each labelled
input that the store still holds is written out as the data sources read it back:

- files (images, audio): `<out>/<label>/<sha256><suffix>`, one folder per label, the layout of
  `data.source=<out>`; the suffix is the input's logged format when the modality reads it, else
  the modality's usual one (the content decides how a file is decoded, not its name);
- texts: `<out>/texts.csv` with the columns `text` and `label`.

An input labelled more than once keeps its latest label. Labels that are not one of the model's
(another model's, sent under a request id both logged), predictions logged before the server
kept inputs (no `input_sha256`), labelled inputs the store does not hold (the server kept none
then, or retention removed them), and files whose bytes no longer hash to their name (a machine
crash while one was written) are counted and left out, not fatal; nothing written at all is.
The dataset is written into a folder beside `out` and renamed to `out` once complete: a failure
or Ctrl-C leaves no `out` behind.
"""

from __future__ import annotations

import csv
import os
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlfactory.bundle import META_FILE, BundleMeta
from mlfactory.errors import MlfactoryError
from mlfactory.labelled_log import LabelledInputs, NothingToCollect, read_labelled
from mlfactory.modalities import Modality
from mlfactory.monitor_command import log_url_or_default, parse_since
from mlfactory.paths import is_within
from mlfactory.serving.input_store import DamagedInput, InputStore
from mlfactory.targets import resolve_bundle

STORE_ENV = "MLFACTORY_INPUT_STORE"
TEXTS_FILE = "texts.csv"
LABELS_LISTED = 10  # the labels without an input the warning names, at most


@dataclass
class CollectResult:
    """What `collect_labelled` wrote."""

    out: Path
    model: str
    source: Path  # what a recipe's `data.source` names: `out` resolved, or its texts.csv
    labels: list[str] = field(default_factory=list)  # the model's labels
    per_label: Counter[str] = field(default_factory=Counter)
    missing: int = 0  # labelled inputs whose file the store does not hold
    damaged: int = 0  # files whose bytes do not hash to their name (left out)
    relabelled: int = 0  # inputs labelled differently in different requests (see `LabelledInputs`)
    not_the_models: int = 0  # labelled predictions whose label is not one of the model's
    not_kept: int = 0  # labelled predictions logged before the server kept inputs

    @property
    def written(self) -> int:
        return sum(self.per_label.values())

    @property
    def unseen_labels(self) -> list[str]:
        """The model's labels that no collected input has."""
        return [label for label in self.labels if not self.per_label[label]]


def collect_labelled(
    target: str,
    out: Path,
    inputs: str | None = None,
    log: str | None = None,
    since: str | None = None,
) -> CollectResult:
    """Write the labelled inputs of `target`'s model into `out` (see the module docstring).

    Args:
        target: a bundle, run folder, MLflow run id or `models:/` URI: its model's name.
        out: a new (or empty) folder to write the dataset into.
        inputs: the input store; default `MLFACTORY_INPUT_STORE`.
        log: the prediction log (`--log`, as `mlfactory monitor` takes it).
        since: only labels stored within this long (`30d`).

    Raises:
        MlfactoryError: no store named or it is not a folder, `out` holds files, `since` is
            not a duration, the store cannot be read, or nothing could be collected (no
            prediction of the model in the log, none labelled, none usable); `out` is not
            created.
        LogDatabaseError: the log cannot be opened or read.
    """
    bundle = resolve_bundle(target)
    store = _input_store(inputs)
    _check_out(out, bundle.path, store.folder)
    cutoff = None if since is None else datetime.now(UTC) - parse_since(since)
    url, meta = log_url_or_default(log), bundle.meta
    labelled = read_labelled(url, meta.name, meta.labels, cutoff, since)
    as_files = not bundle.modality.reads_tables  # texts are written as one table
    unusable = sorted({label for label, _ in labelled.latest.values() if not _folder_name(label)})
    if as_files and unusable:
        raise MlfactoryError(f"the label '{unusable[0]}' cannot be a folder name of the dataset")
    resolved = out.resolve()  # what `data.source` names, from any folder
    result = _counted(out, resolved if as_files else resolved / TEXTS_FILE, meta, labelled)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name[:64]}.{uuid.uuid4().hex[:8]}.tmp"  # short: any name fits
    try:  # made beside `out` and moved into place last: a failure or Ctrl-C leaves no `out`
        work.mkdir()
        _write_dataset(work, labelled, store, bundle.modality, result)
        if not result.written:
            notes = "; ".join(result_notes(result))
            raise NothingToCollect(f"no labelled input of '{meta.name}' to collect: {notes}")
        if out.is_dir():  # empty (checked above; `.` too): what was made moves into it
            for entry in sorted(work.iterdir()):
                entry.rename(out / entry.name)
        else:
            work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def result_notes(result: CollectResult) -> list[str]:
    """What the summary line adds to the count: each kind of labelled input left out."""
    counted = (
        (result.relabelled, "relabelled: the latest label kept"),
        (
            result.not_the_models,
            "labels that are not the model's (another model's, sent under a request id both "
            "logged): left out",
        ),
        (
            result.not_kept,
            "labelled before the server kept inputs (no input_sha256 in the log): left out",
        ),
        (result.missing, "no longer in the store (not kept, or past retention)"),
        (
            result.damaged,
            "damaged in the store (their bytes no longer hash to their name): left out",
        ),
    )
    return [f"{count} {what}" for count, what in counted if count]


def summary_line(result: CollectResult) -> str:
    """`N labelled inputs of '<model>' written to <out> (<label> <n>, ...)`, and the notes."""
    counts = ", ".join(f"{label} {n}" for label, n in sorted(result.per_label.items()))
    line = f"{result.written} labelled inputs of '{result.model}' written to {result.out}"
    line += f" ({counts})" if counts else ""
    return "; ".join([line, *result_notes(result)])


def unseen_labels_warning(result: CollectResult) -> str | None:
    """The warning when some of the model's labels have no collected input: a model trained
    on the collected data alone would not have those classes."""
    unseen = result.unseen_labels
    if not unseen:
        return None
    named = ", ".join(unseen[:LABELS_LISTED])
    named += f" and {len(unseen) - LABELS_LISTED} more" if len(unseen) > LABELS_LISTED else ""
    return (
        f"no input labelled {named}: a model trained on this data alone will not know "
        f"{'that label' if len(unseen) == 1 else 'those labels'}; merge the data the model "
        f"was trained on (its recipe's data.source) into {result.out} before training on it"
    )


def retrain_target(target: str) -> str:
    """`target` as `mlfactory train` reads it back as this bundle: a folder named like a
    packaged recipe (`image`) as `./image`, one named like a recipe file (`model.yaml`) by its
    `bundle.json`; other targets as given."""
    from mlfactory.config.loader import list_recipes

    path = Path(target).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_dir():
        return str(resolve_bundle(target).path / META_FILE)
    if target in list_recipes():
        return f"./{target}"
    return target


def _check_out(out: Path, bundle: Path, store: Path) -> None:
    """`out` is new or an empty folder, outside the bundle and the input store."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MlfactoryError(f"--out {out}: it exists and is not an empty folder; choose another")
    for folder, what in ((bundle, "the bundle"), (store, "the input store")):
        if is_within(out, folder):  # a file added to a bundle changes its digest
            raise MlfactoryError(f"--out {out} is inside {what} {folder}: write it elsewhere")


def _counted(out: Path, source: Path, meta: BundleMeta, labelled: LabelledInputs) -> CollectResult:
    """The result before any input is read: what the log alone leaves out."""
    return CollectResult(
        out,
        meta.name,
        source,
        labels=list(meta.labels),
        relabelled=labelled.relabelled,
        not_the_models=labelled.not_the_models,
        not_kept=labelled.not_kept,
    )


def _write_dataset(
    folder: Path,
    labelled: LabelledInputs,
    store: InputStore,
    modality: Modality,
    result: CollectResult,
) -> None:
    """Write each labelled input the store holds into `folder`, counting what is left out."""
    texts: list[tuple[str, str]] = []
    for digest, (label, summary) in labelled.latest.items():
        try:
            raw = store.read(digest)
        except DamagedInput:
            result.damaged += 1
            continue
        except OSError as exc:  # a shard replaced by a file, a folder not readable, ...
            where = exc.filename or store.path(digest)
            raise MlfactoryError(
                f"cannot read the input store {store.folder}: {exc.strerror or exc}: {where}"
            ) from None
        if raw is None:
            result.missing += 1
            continue
        if modality.reads_tables:
            texts.append((raw.decode("utf-8"), label))
        else:
            _write_file(folder / label, digest, raw, summary, modality)
        result.per_label[label] += 1
    if texts:
        with (folder / TEXTS_FILE).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(texts)


def _input_store(inputs: str | None) -> InputStore:
    """The server's input store: `--inputs`, else `MLFACTORY_INPUT_STORE`; an existing folder."""
    folder = inputs or os.environ.get(STORE_ENV, "").strip()
    if not folder:
        raise MlfactoryError(
            f"--inputs: name the server's input store (its {STORE_ENV}); without one the "
            "server keeps no inputs"
        )
    store = InputStore(Path(folder).expanduser())
    if not store.folder.is_dir():
        if not inputs:  # the variable named it
            raise MlfactoryError(f"{STORE_ENV}={folder} (no --inputs given): no such folder")
        raise MlfactoryError(f"--inputs {folder}: no such folder (the server's {STORE_ENV})")
    return store


def _write_file(
    folder: Path, digest: str, raw: bytes, summary: dict[str, Any], modality: Modality
) -> None:
    """Write one labelled file input into its label's folder, named by its hash, with its
    logged format's suffix when the modality reads it (else the modality's usual one)."""
    suffix = f".{str(summary.get('format', '')).lower()}"
    if suffix not in modality.file_suffixes:
        suffix = modality.hf_default_suffix
    folder.mkdir(exist_ok=True)
    (folder / f"{digest}{suffix}").write_bytes(raw)


def _folder_name(label: str) -> bool:
    """Whether a label can name a folder of the dataset (and stay inside it)."""
    return label.strip() not in ("", ".", "..") and "/" not in label and "\\" not in label
