"""Input summaries of real inputs as drift-test columns: which features are categorical."""

from __future__ import annotations

import numpy as np

from mlfactory.monitoring.features import MISSING, feature_kinds, summary_columns


def test_kinds_follow_the_serving_summaries() -> None:
    image = {"bytes": 312, "width": 28, "height": 28, "format": "PNG", "brightness_mean": 0.13}
    text = {"bytes": 80, "chars": 80, "tokens": 21, "truncated": False}
    audio = {
        "bytes": 9120,
        "duration_s": 1.2,
        "sample_rate": 44100,
        "channels": 1,
        "mean_db": -41.5,
    }
    kinds = feature_kinds([image, text, audio])
    assert {k for k, v in kinds.items() if v == "categorical"} == {
        "format",
        "truncated",
        "sample_rate",
        "channels",
    }
    assert kinds["duration_s"] == kinds["width"] == kinds["tokens"] == "numeric"


def test_missing_keys_are_nan_or_the_missing_category() -> None:
    summaries = [{"bytes": 10, "format": "PNG"}, {"bytes": 12}, {"format": "JPEG"}]
    columns = summary_columns(summaries, {"bytes": "numeric", "format": "categorical"})
    np.testing.assert_array_equal(columns.numeric["bytes"], [10.0, 12.0, np.nan])
    assert columns.categorical["format"].tolist() == ["PNG", MISSING, "JPEG"]
    assert len(columns) == 3
    assert columns.subset(np.array([2])).categorical["format"].tolist() == ["JPEG"]
