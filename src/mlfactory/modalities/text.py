"""Text modality: UTF-8 decoding and the ONE tokenization path used by training and serving.

The tokenizer is the backbone's own `tokenizer.json`, carried in the bundle and run with the
Hugging Face `tokenizers` library (Rust, no torch). Every text is truncated and padded to the
recipe's `max_length`, so the model always sees fixed-shape inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlfactory.errors import BundleError, InputError

TOKENIZER_FILE = "tokenizer.json"
INPUT_NAMES = ("input_ids", "attention_mask")
# Pad tokens of common vocabularies, used when a tokenizer.json carries no padding settings.
KNOWN_PAD_TOKENS = ("[PAD]", "<pad>")
# [CLS] and [SEP] alone take two positions; anything shorter cannot hold a word.
MIN_LENGTH = 3


def decode_text(raw: bytes) -> str:
    """The text in `raw`, refusing what is not usable text.

    Raises:
        InputError: not valid UTF-8, or empty / whitespace only (422).
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

    modality = "text"

    def __init__(self, params: Mapping[str, Any], assets_dir: Path | None = None) -> None:
        """Load the tokenizer once.

        Args:
            params: `max_length` (see `TextPreprocessing`).
            assets_dir: the folder holding `tokenizer.json` (the bundle, or a training run).

        Raises:
            BundleError: no `assets_dir`, no tokenizer in it, or `max_length` too small.
        """
        self.max_length = int(params["max_length"])
        if self.max_length < MIN_LENGTH:
            raise BundleError(f"max_length {self.max_length} is too small (at least {MIN_LENGTH})")
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
