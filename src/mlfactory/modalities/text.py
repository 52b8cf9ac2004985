"""Text modality: UTF-8 decoding and the ONE tokenization path used by training and serving.

The tokenizer is the backbone's own `tokenizer.json`, carried in the bundle and run with the
Hugging Face `tokenizers` library (Rust, no torch). Every text is truncated and padded to the
recipe's `max_length`, so the model always sees fixed-shape inputs. Also text-specific: texts
arrive at the API as JSON, items come from `.txt` files or csv/tsv/jsonl tables, the logged
summary counts characters and tokens, and the baseline is TF-IDF with logistic regression.
"""

from __future__ import annotations

import codecs
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlfactory.config.constraints import bounded
from mlfactory.errors import BundleError, InputError
from mlfactory.modalities.base import ApiInput, Baseline, Encoder, Modality, refusal

TOKENIZER_FILE = "tokenizer.json"
INPUT_NAMES = ("input_ids", "attention_mask")
FILE_SUFFIXES = (".txt",)
# Pad tokens of common vocabularies, used when a tokenizer.json carries no padding settings.
KNOWN_PAD_TOKENS = ("[PAD]", "<pad>")
# What `TextModality.test_input` sends: common words, so any vocabulary has most of them.
TEST_SENTENCE = "The price of crude oil rose as the ship reached the port."
# [CLS] and [SEP] alone take two positions; anything shorter cannot hold a word.
MIN_LENGTH = 3
# Longer sequences than any encoder we know of is a configuration mistake.
MAX_LENGTH = 8192
# Characters that show nothing: spaces and separators, controls, format characters (zero-width
# space and joiners, direction marks, the byte-order mark, soft hyphen), and the letters and
# symbols that render blank (Hangul fillers, the braille blank). A text of only these is empty.
INVISIBLE_CATEGORIES = ("Cc", "Cf", "Zs", "Zl", "Zp")
BLANK_LETTERS = "\u115f\u1160\u2800\u3164\uffa0"
# The invisible characters of the Basic Multilingual Plane as the body of a regular-expression
# character class (Unicode 14): the API schema's "not blank" pattern is built from it.
INVISIBLE_CLASS = (
    r"\u0000-\u0020\u007f-\u00a0\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
    r"\u115f\u1160\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u2064\u2066-\u206f"
    r"\u2800\u3000\u3164\ufeff\uffa0\ufff9-\ufffb"
)


@dataclass
class TextPreprocessing:
    """Tokenization shared by training and serving."""

    # Tokens per text, [CLS] and [SEP] included; longer texts are truncated, shorter padded.
    max_length: int = bounded(128, ge=MIN_LENGTH, le=MAX_LENGTH)


def is_invisible(char: str) -> bool:
    """Whether a character shows nothing (see `INVISIBLE_CATEGORIES` and `BLANK_LETTERS`)."""
    return (
        char.isspace()
        or unicodedata.category(char) in INVISIBLE_CATEGORIES
        or char in BLANK_LETTERS
    )


def decode_text(raw: bytes) -> str:
    """The text in `raw`, refusing what is not usable text.

    Serving decodes every text with it, and data preparation checks every text file with it.

    Raises:
        InputError: not valid UTF-8, or empty / whitespace only / only invisible characters
            such as `\\u200b` or `\\u0000` (422).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"not valid UTF-8 text (invalid byte at position {exc.start}): send UTF-8", 422
        ) from None
    if not text.strip():
        what = "empty" if not text else "whitespace only"
        raise InputError(f"empty text: the input is {what}", 422)
    if all(map(is_invisible, text)):
        raise InputError(
            "empty text: the input holds only invisible characters (controls, zero-width or "
            "format characters)",
            422,
        )
    return text


def load_tokenizer(path: Path, max_length: int) -> Any:
    """Read `tokenizer.json`, truncating and padding every encoding to exactly `max_length`.

    Truncation and padding set in the file (the MiniLM one says 128) are replaced: the recipe's
    `max_length` is the one that counts.

    Raises:
        BundleError: the file is missing or unreadable, or names no padding token.
    """
    from tokenizers import Tokenizer

    if not path.is_file():
        raise BundleError(f"text bundle without tokenizer: {path} is missing")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises plain Exception subclasses
        raise BundleError(f"cannot read tokenizer {path}: {exc}") from None
    pad_id, pad_token = _pad_token(tokenizer, path)
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(length=max_length, pad_id=pad_id, pad_token=pad_token)
    return tokenizer


def _pad_token(tokenizer: Any, path: Path) -> tuple[int, str]:
    padding = tokenizer.padding or {}
    if padding.get("pad_token") is not None and padding.get("pad_id") is not None:
        return int(padding["pad_id"]), str(padding["pad_token"])
    for token in KNOWN_PAD_TOKENS:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return int(token_id), token
    raise BundleError(f"tokenizer {path} has no padding token (none of {KNOWN_PAD_TOKENS})")


class TextEncoder:
    """Turns the UTF-8 bytes of one text into fixed-length `input_ids` and `attention_mask`."""

    def __init__(self, params: Mapping[str, Any], assets_dir: Path | None = None) -> None:
        """Load the tokenizer once.

        Args:
            params: `max_length` (see `TextPreprocessing`).
            assets_dir: the folder holding `tokenizer.json` (the bundle, or a training run).

        Raises:
            BundleError: no `assets_dir`, or no usable tokenizer in it.
        """
        self.max_length = int(params["max_length"])
        if assets_dir is None:
            raise BundleError(f"the text encoder needs the folder holding {TOKENIZER_FILE}")
        self.tokenizer = load_tokenizer(Path(assets_dir) / TOKENIZER_FILE, self.max_length)

    def __call__(self, raw: bytes) -> dict[str, np.ndarray]:
        encoding = self.tokenizer.encode(decode_text(raw))
        return {
            "input_ids": np.asarray(encoding.ids, dtype=np.int64),
            "attention_mask": np.asarray(encoding.attention_mask, dtype=np.int64),
        }

    def input_shapes(self) -> dict[str, list[int]]:
        """ONNX input shapes for one item (batch axis excluded)."""
        return {name: [self.max_length] for name in INPUT_NAMES}

    def input_dtypes(self) -> dict[str, type[np.generic]]:
        """ONNX input element types."""
        return {name: np.int64 for name in INPUT_NAMES}


def decode_texts(raws: list[bytes]) -> list[str]:
    """The texts of raw inputs (for the baseline, which reads what the encoder reads)."""
    return [decode_text(raw) for raw in raws]


class TextModality(Modality):
    """Texts: JSON strings at the API; `.txt` files or csv/tsv/jsonl rows as data."""

    name = "text"
    preprocessing_class = TextPreprocessing
    api_input = ApiInput("texts")
    file_suffixes = FILE_SUFFIXES
    reads_tables = True

    def encoder(self, params: Mapping[str, Any], assets_dir: Path | None = None) -> Encoder:
        """The tokenizer encoder; `assets_dir` holds `tokenizer.json`."""
        return TextEncoder(params, assets_dir)

    def test_input(self, params: Mapping[str, Any]) -> bytes:
        """A short English sentence: a tokenizer whose ids the model has no rows for (one
        swapped in from another backbone) fails on it."""
        return TEST_SENTENCE.encode("utf-8")

    def check_file(self, data: bytes) -> str | None:
        """A text file must be UTF-8 and hold more than whitespace."""
        return refusal(decode_text, data)

    def identity(self, data: bytes) -> bytes:
        """The text without a byte order mark, with Unix line ends: a copy of a file saved by
        a Windows editor is the same text to the tokenizer, and so the same item."""
        return data.removeprefix(codecs.BOM_UTF8).replace(b"\r\n", b"\n")

    def describe(
        self, raw: bytes, encoded: Mapping[str, np.ndarray], params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """`chars`, `tokens` (before padding) and whether the text was `truncated`."""
        tokens = int(np.asarray(encoded["attention_mask"]).sum())
        return {
            "chars": len(raw.decode("utf-8")),
            "tokens": tokens,
            "truncated": tokens >= int(params["max_length"]),
        }

    def baseline(self, params: Mapping[str, Any]) -> Baseline:
        """Logistic regression on TF-IDF of word uni- and bigrams."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer

        model = make_pipeline(
            FunctionTransformer(decode_texts),
            TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
            LogisticRegression(max_iter=1000, C=10.0),
        )
        return Baseline("logistic regression on TF-IDF word 1-2 grams", model)


MODALITY = TextModality()
