"""What every modality provides: the one object that owns everything modality-specific.

A `Modality` knows its preprocessing parameters (a checked dataclass) and builds the encoder
that turns one raw input into model arrays; it says how inputs arrive at the API (`ApiInput`),
which files hold items of it, the check a file must pass when data is prepared, the summary of
an input that the prediction log keeps (and that monitoring compares), the training-time
augmentation, the simple baseline model, and the test input that checks a bundle as it loads.
Data preparation, training, export, serving, the demo and the baselines ask the modality; none
of them asks which modality it is.

Nothing here imports torch.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

from mlfactory.config.constraints import from_mapping
from mlfactory.errors import InputError

log = logging.getLogger(__name__)

Augment = Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]]
# Why a file of no bytes is refused: by the server, by the data check and by the UI alike.
EMPTY_FILE = "empty file: it has no bytes"


class Encoder(Protocol):
    """One raw input in, model input arrays (no batch axis) out."""

    def __call__(self, raw: bytes) -> dict[str, np.ndarray]: ...

    def input_shapes(self) -> dict[str, list[int]]: ...

    def input_dtypes(self) -> dict[str, type[np.generic]]: ...


@dataclass(frozen=True)
class ApiInput:
    """How a modality's inputs arrive at `POST /v1/predict`.

    Attributes:
        kind: "files" (multipart form field `files`, repeated) or "texts" (a JSON body).
        content_types: media types of accepted files (documentation: content is sniffed).
        suffixes: file name suffixes of accepted files (documentation, as above).
    """

    kind: Literal["files", "texts"]
    content_types: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Baseline:
    """A simple classical model for a modality: it reads raw inputs (bytes) like the encoder."""

    name: str
    model: Any  # an unfitted scikit-learn estimator whose `fit`/`predict` take lists of bytes


class Modality(ABC):
    """Everything specific to one kind of input (images, texts, audio)."""

    name: ClassVar[str]
    preprocessing_class: ClassVar[type]
    api_input: ClassVar[ApiInput]
    # Files that hold one item each in a folder with one sub-folder per class.
    file_suffixes: ClassVar[tuple[str, ...]]
    # True when csv/tsv/jsonl tables of (text, label) rows are items of this modality.
    reads_tables: ClassVar[bool] = False
    # The Hugging Face `datasets` feature type holding this modality's items (None: a column of
    # strings), and the suffix of a file written from an array-only value.
    hf_feature: ClassVar[str | None] = None
    hf_default_suffix: ClassVar[str] = ""

    def preprocessing(
        self, params: Mapping[str, Any] | None, prefix: str = "preprocess."
    ) -> dict[str, Any]:
        """The full preprocessing parameters: `params` checked, defaults filled in.

        Raises:
            ConfigError: an unknown key, a value of the wrong type or out of range, or a
                combination that cannot work; the message names the key after `prefix` (a
                recipe's `preprocess.`, a bundle.json's `preprocessing.`).
        """
        return asdict(from_mapping(self.preprocessing_class, params, prefix))

    @abstractmethod
    def encoder(self, params: Mapping[str, Any], assets_dir: Path | None = None) -> Encoder:
        """The encoder for checked parameters (see `preprocessing`).

        Args:
            params: the preprocessing parameters.
            assets_dir: the folder holding the modality's asset files (a bundle, a run).
        """

    @abstractmethod
    def test_input(self, params: Mapping[str, Any]) -> bytes:
        """A small valid input as a client would send it (the bytes of a file, or of a text),
        for checked parameters (see `preprocessing`).

        `Predictor.check` runs it through a bundle's own encoder and model when the bundle is
        loaded, so preprocessing or a model that fails every input is refused at start-up (or
        reload), before anyone is served. Deterministic: the same parameters give the same bytes.
        """

    @abstractmethod
    def check_file(self, data: bytes) -> str | None:
        """Why the bytes of a file cannot be an item of this modality, or None when they can."""

    def identity(self, data: bytes) -> bytes:
        """What makes two valid items the same item: data preparation keys items by its hash,
        so copies are one item and never fall into two splits. The bytes themselves, unless a
        modality knows of copies that differ only in bytes its encoder ignores."""
        return data

    @abstractmethod
    def describe(
        self, raw: bytes, encoded: Mapping[str, np.ndarray], params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Cheap descriptive features of one valid input (may raise; see `summarize`)."""

    def summarize(
        self, raw: bytes, encoded: Mapping[str, np.ndarray], params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """What the prediction log keeps about one input, and what drift checks compare.

        Always has `bytes`; the modality's features (`describe`) are added when they can be
        computed, so a summary never fails a prediction that already succeeded.
        """
        summary: dict[str, Any] = {"bytes": len(raw)}
        try:
            summary.update(self.describe(raw, encoded, params))
        except Exception:  # a summary is a best effort: the input itself was valid
            log.warning("could not summarise a %s input", self.name, exc_info=True)
        return summary

    def augmentation(self) -> Augment | None:
        """The training-time augmentation of encoded inputs (None: none). Serving never calls it."""
        return None

    @abstractmethod
    def baseline(self, params: Mapping[str, Any]) -> Baseline:
        """The simple classical model that the trained one is compared with."""


def refusal(decode: Callable[[bytes], object], data: bytes) -> str | None:
    """Why `decode` refuses `data` (its `InputError` message), or None when it accepts it."""
    try:
        decode(data)
    except InputError as exc:
        return str(exc)
    return None


def rounded(value: float, digits: int = 4) -> float:
    """A summary value rounded for the log."""
    return round(float(value), digits)
