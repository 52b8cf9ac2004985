"""What a data source yields before validation: labelled files or texts, plus what it skipped.

Every source (a local folder, a table, a packaged data set, a download) resolves to a `RawSource`;
`prepare.prepare_dataset` then validates, deduplicates and splits it. Keeping this type tiny is
what lets each source live in its own small module.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from mlfactory.config.schema import DataConfig
from mlfactory.errors import DataError
from mlfactory.modalities import Modality


@dataclass(frozen=True)
class RawItem:
    """One candidate example: a file on disk or an inline text, with its label.

    `origin` is what a report shows for it: the file's path, or `file:line` for a table row.
    The label is kept in Unicode's composed form (NFC): a folder named `café` on macOS (which
    decomposes names) and `café` in a table are one class.
    """

    label: str
    origin: str
    path: Path | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", unicodedata.normalize("NFC", self.label))


@dataclass
class RawSource:
    """The candidates a source yields and the entries it could not turn into candidates."""

    items: list[RawItem] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    # A source string naming exactly this data, when the source is versioned (`dvc:` at a commit).
    version: str | None = None

    def extend(self, other: RawSource) -> None:
        """Append another source's items and skipped entries."""
        self.items.extend(other.items)
        self.skipped.extend(other.skipped)


@dataclass(frozen=True)
class SourceContext:
    """Everything a source needs: the recipe's data section, its modality and the cache."""

    data: DataConfig
    modality: Modality
    refresh: bool = False

    @property
    def source(self) -> str:
        return self.data.source

    @property
    def cache_root(self) -> Path:
        return Path(self.data.cache_dir).absolute()

    @property
    def sources_dir(self) -> Path:
        """Where sources are materialised (PNG digits, extracted archives, ...)."""
        return self.cache_root / "_sources"

    @property
    def downloads_dir(self) -> Path:
        """Where downloaded files (archives, wheels) are kept."""
        return self.cache_root / "_downloads"

    def require(self, holds: str) -> None:
        """Refuse a packaged source that holds another modality's data than the recipe's,
        before anything is read (each item would be skipped as unreadable).

        Raises:
            DataError: `holds` is not the recipe's modality.
        """
        if holds != self.modality.name:
            article = "an" if holds[0] in "aeiou" else "a"
            raise DataError(
                f"data source '{self.source}' holds {holds} data, but the recipe's modality is "
                f"{self.modality.name}: use {article} {holds} recipe (`{holds}`, or a recipe "
                "built on it)"
            )


def skip(origin: str | Path, reason: str) -> dict[str, str]:
    """A `PreparedDataset.skipped` entry."""
    return {"path": str(origin), "reason": reason}


def origin_order(origin: str) -> tuple[str | int, ...]:
    """Sort key of an origin that reads numbers as numbers: `file.csv:2` before `file.csv:10`."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", origin)))
