"""`mlfactory collect`: the inputs users labelled, as a dataset to retrain on.

The server keeps the raw inputs in its input store (`MLFACTORY_INPUT_STORE`, see
`serving.input_store`) and the true labels that came back (`POST /v1/feedback`) in its
prediction log. This joins the two for one model (every version of its name): each labelled
input that the store still holds is written out as the data sources read it back:

- files (images, audio): `<out>/<label>/<sha256><suffix>`, one folder per label, the layout of
  `data.source=<out>`; the suffix is the input's logged format when the modality reads it, else
  the modality's usual one (the content decides how a file is decoded, not its name);
- texts: `<out>/texts.csv` with the columns `text` and `label`.

An input labelled more than once keeps its latest label. Labelled inputs the store does not
hold (the server kept none then, or retention removed them), and files whose bytes no longer
hash to their name (a machine crash while one was written), are counted and left out, not
fatal.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, inspect, select
from sqlalchemy.exc import SQLAlchemyError

from mlfactory.bundle import META_FILE
from mlfactory.errors import LogDatabaseError, MlfactoryError
from mlfactory.modalities import Modality
from mlfactory.monitor_command import check_log_tables, log_url_or_default, parse_since
from mlfactory.monitoring.log_rows import decoded, json_text
from mlfactory.monitoring.log_window import open_log
from mlfactory.paths import is_within
from mlfactory.serving.input_store import DamagedInput, InputStore
from mlfactory.serving.log_database import database_reason
from mlfactory.serving.log_tables import feedback, predictions
from mlfactory.targets import resolve_bundle

STORE_ENV = "MLFACTORY_INPUT_STORE"
TEXTS_FILE = "texts.csv"


@dataclass
class CollectResult:
    """What `collect_labelled` wrote."""

    out: Path
    model: str
    source: Path  # what a recipe's `data.source` names to read it: `out`, or its texts.csv
    per_label: Counter[str] = field(default_factory=Counter)
    missing: int = 0  # labelled inputs whose file the store does not hold
    damaged: int = 0  # files whose bytes do not hash to their name (left out)
    relabelled: int = 0  # inputs labelled more than once with different labels

    @property
    def written(self) -> int:
        return sum(self.per_label.values())


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
        MlfactoryError: no store named or it is not a folder, `out` holds files, or `since`
            is not a duration.
        LogDatabaseError: the log cannot be opened or read.
    """
    bundle = resolve_bundle(target)
    store = _input_store(inputs)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MlfactoryError(f"--out {out}: it exists and is not an empty folder; choose another")
    for folder, what in ((bundle.path, "the bundle"), (store.folder, "the input store")):
        if is_within(out, folder):  # a file added to a bundle changes its digest
            raise MlfactoryError(f"--out {out} is inside {what} {folder}: write it elsewhere")
    cutoff = None if since is None else datetime.now(UTC) - parse_since(since)
    labelled, relabelled = _latest_labels(log_url_or_default(log), bundle.meta.name, cutoff)
    modality = bundle.modality
    as_files = modality.api_input.kind != "texts"
    source = out if as_files else out / TEXTS_FILE
    result = CollectResult(out, bundle.meta.name, source, relabelled=relabelled)
    unusable = sorted({label for label, _ in labelled.values() if not _folder_name(label)})
    if as_files and unusable:
        raise MlfactoryError(f"the label '{unusable[0]}' cannot be a folder name of the dataset")
    out.mkdir(parents=True, exist_ok=True)
    texts: list[tuple[str, str]] = []
    for digest, (label, summary) in labelled.items():
        try:
            raw = store.read(digest)
        except DamagedInput:
            result.damaged += 1
            continue
        if raw is None:
            result.missing += 1
            continue
        if as_files:
            _write_file(out / label, digest, raw, summary, modality)
        else:
            texts.append((raw.decode("utf-8"), label))
        result.per_label[label] += 1
    if texts:
        with (out / TEXTS_FILE).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(texts)
    return result


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


def _latest_labels(
    log_url: str, model_name: str, cutoff: datetime | None
) -> tuple[dict[str, tuple[str, dict[str, Any]]], int]:
    """Each labelled input's digest -> (its latest label, its input summary), and how many
    inputs were labelled more than once with different labels."""
    engine = open_log(log_url)
    shown = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as connection:
            inspector = inspect(connection)
            tables = set(inspector.get_table_names())
            check_log_tables(tables, shown)
            columns = (
                {c["name"] for c in inspector.get_columns(predictions.name)}
                if (predictions.name in tables)
                else set()
            )
            if feedback.name not in tables or "input_sha256" not in columns:
                return {}, 0
            query = (
                select(
                    predictions.c.id,
                    predictions.c.input_sha256,
                    json_text(predictions.c.input_summary, "input_summary"),
                    feedback.c.label,
                )
                .select_from(
                    predictions.join(
                        feedback,
                        and_(
                            feedback.c.request_id == predictions.c.request_id,
                            feedback.c.input_index == predictions.c.input_index,
                        ),
                    )
                )
                .where(
                    predictions.c.model_name == model_name,
                    predictions.c.input_sha256.is_not(None),
                )
                .order_by(feedback.c.ts, feedback.c.id)
            )
            if cutoff is not None:
                query = query.where(feedback.c.ts >= cutoff)
            rows = list(connection.execute(query).all())
    except SQLAlchemyError as exc:
        message = f"cannot read the prediction log at '{shown}': {database_reason(exc)}"
        raise LogDatabaseError(message) from None
    finally:
        engine.dispose()
    latest: dict[str, tuple[str, dict[str, Any]]] = {}
    labels_seen: dict[str, set[str]] = {}
    for row in rows:  # a malformed summary: one line naming its row, as `monitor` says it
        summary = decoded(row, "input_summary", dict, model_name) if row.input_summary else {}
        latest[row.input_sha256] = (row.label, summary)
        labels_seen.setdefault(row.input_sha256, set()).add(row.label)
    return latest, sum(len(seen) > 1 for seen in labels_seen.values())
