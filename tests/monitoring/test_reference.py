"""The profile written at export: in the bundle, from the validation split, without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

from mlfactory.data.dataset import Item, PreparedDataset
from mlfactory.monitoring.profile import ARRAYS_FILE, META_FILE, MIN_REFERENCE
from mlfactory.monitoring.reference import profile_mb, reference_items


def test_export_writes_a_profile_that_loads_without_torch(monitored_digits: Any) -> None:
    bundle = monitored_digits.bundle
    assert (bundle.path / ARRAYS_FILE).is_file() and (bundle.path / META_FILE).is_file()
    assert profile_mb(bundle.path) <= 5.0
    meta = json.loads((bundle.path / META_FILE).read_text())
    validation = len(monitored_digits.dataset.split("val"))
    assert (meta["source"], meta["n_reference"]) == ("validation split", validation)
    assert meta["labels"] == bundle.meta.labels
    script = textwrap.dedent(
        f"""
        import sys
        from mlfactory.monitoring.profile import load_profile
        profile = load_profile({str(bundle.path)!r})
        assert "torch" not in sys.modules, "loading a profile imported torch"
        print(profile.ood.threshold, len(profile.drift.confidence))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    threshold, reference = done.stdout.split()
    assert float(threshold) == meta["ood"]["threshold"]
    assert int(reference) == validation


def _dataset(per_split: dict[str, int]) -> PreparedDataset:
    items = [
        Item(key=f"{split}{i}", label=str(i % 2), split=split, text=f"{split} {i}")
        for split, count in per_split.items()
        for i in range(count)
    ]
    return PreparedDataset("tiny", "text", "inline", ["0", "1"], items, "fingerprint")


def test_a_small_validation_split_is_joined_by_the_test_split() -> None:
    items, source = reference_items(_dataset({"train": 50, "val": MIN_REFERENCE, "test": 5}))
    assert (len(items), source) == (MIN_REFERENCE, "validation split")
    items, source = reference_items(_dataset({"train": 50, "val": 8, "test": 12}))
    assert (len(items), source) == (20, "validation and test splits")
    assert {item.split for item in items} == {"val", "test"}
