"""`GET /v1/model/card`: the served bundle's card, with or without a reference profile."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mlfactory.bundle import load_bundle
from mlfactory.evaluation import evaluate_items
from mlfactory.monitoring.profile import ARRAYS_FILE
from mlfactory.predictor import Predictor
from mlfactory.serving.app import create_app
from mlfactory.serving.settings import ServingSettings
from tests.serving.conftest import LABELS, DigitImage


@pytest.fixture(scope="module")
def evaluated_bundle(
    tmp_path_factory: pytest.TempPathFactory, image_bundle: Path, digit_images: list[DigitImage]
) -> Path:
    """The digits bundle, evaluated on the 40 real digits as `record_evaluation` stores it."""
    folder = tmp_path_factory.mktemp("card") / "bundle"
    shutil.copytree(image_bundle, folder)
    bundle = load_bundle(folder)
    metrics = evaluate_items(Predictor(bundle), digit_images)  # type: ignore[arg-type]
    counts = {"train": {"3": 5}, "val": {"3": 2}, "test": {i.label: 4 for i in digit_images}}
    bundle.meta.metrics = {
        "test": metrics,
        "data": {"source": "digits/", "counts": counts},
        "data_fingerprint": "abc124",  # evaluated after the data changed
    }
    bundle.meta.data_fingerprint, bundle.meta.git_commit = "abc123", "0123abcd"
    bundle.save_meta()
    return folder


def get_card(folder: Path) -> dict:  # type: ignore[type-arg]
    with TestClient(create_app(folder, ServingSettings())) as client:
        response = client.get("/v1/model/card")
    assert response.status_code == 200, response.text
    return response.json()


def test_the_card_shows_the_stored_evaluation_data_and_lineage(evaluated_bundle: Path) -> None:
    card = get_card(evaluated_bundle)
    stored = load_bundle(evaluated_bundle).meta.metrics["test"]
    assert (card["name"], card["modality"], card["labels"]) == (
        "digits-serving-test",
        "image",
        LABELS,
    )
    assert card["metrics"]["accuracy"] == stored["accuracy"]
    assert card["metrics"]["test_items"] == 40
    assert card["metrics"]["data_fingerprint"] == "abc124"  # not the training data's abc123
    assert [row["label"] for row in card["per_class"]] == LABELS
    assert [row["support"] for row in card["per_class"]] == [4] * 10
    assert card["per_class"][7]["f1"] == stored["per_class"]["7"]["f1"]
    assert card["confusion_matrix"] == stored["confusion_matrix"]
    assert card["data"] == {
        "source": "digits/",
        "version": None,  # not a versioned (dvc:) source
        "fingerprint": "abc123",
        "splits": {"train": 5, "val": 2, "test": 40},
        "counts": {"train": {"3": 5}, "val": {"3": 2}, "test": dict.fromkeys(LABELS, 4)},
    }
    assert card["lineage"]["git_commit"] == "0123abcd"
    assert card["reference_profile"] is None


def test_a_bundle_from_before_the_card_gets_one_with_nulls(image_bundle: Path) -> None:
    card = get_card(image_bundle)  # metrics {"accuracy": 0.1}, no split counts
    assert card["metrics"]["accuracy"] == 0.1
    assert card["per_class"] == [] and card["confusion_matrix"] is None
    assert card["data"]["splits"] is None and card["data"]["counts"] is None


def test_the_card_summarises_the_reference_profile(evaluated_bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    shutil.copytree(evaluated_bundle, folder)
    profile = {
        "format_version": 1,
        "labels": LABELS,
        "temperature": 1.3,
        "ood": {"method": "mahalanobis", "threshold": 4.2, "fpr": 0.05},
        "drift": {"features": {"width": "numeric", "format": "categorical"}},
        "source": "validation split",
        "n_reference": 48,
        "reference_accuracy": 0.9,
    }
    (folder / "profile.json").write_text(json.dumps(profile))
    summary = get_card(folder)["reference_profile"]
    assert summary["source"] == "validation split" and summary["reference_items"] == 48
    assert summary["ood_threshold"] == 4.2 and summary["ood_false_positive_rate"] == 0.05
    assert summary["features"] == {"width": "numeric", "format": "categorical"}
    # without its arrays (profile.npz) the server cannot use it, and the card says so
    assert "cannot be read" in summary["problem"] and "monitors nothing" in summary["problem"]


def test_the_card_says_when_the_server_cannot_use_the_profile(
    monitored_digits: Any, tmp_path: Path
) -> None:
    """A real profile the server uses has no problem; the same with its arrays gone, or made
    for other labels, is summarised from profile.json and named as unused, as
    `/v1/monitoring/drift` names it."""
    assert get_card(monitored_digits.bundle.path)["reference_profile"]["problem"] is None
    without_arrays = Path(shutil.copytree(monitored_digits.bundle.path, tmp_path / "a"))
    (without_arrays / ARRAYS_FILE).unlink()
    summary = get_card(without_arrays)["reference_profile"]
    assert summary["reference_items"] > 0
    assert f"{ARRAYS_FILE}" in summary["problem"] and "monitors nothing" in summary["problem"]
    relabelled = Path(shutil.copytree(monitored_digits.bundle.path, tmp_path / "b"))
    profile = json.loads((relabelled / "profile.json").read_text())
    profile["labels"] = [f"digit {label}" for label in profile["labels"]]
    (relabelled / "profile.json").write_text(json.dumps(profile))
    problem = get_card(relabelled)["reference_profile"]["problem"]
    assert problem.startswith("the profile's labels are not the bundle's (`mlfactory profile")


def test_an_unreadable_profile_is_named_on_the_card(evaluated_bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    shutil.copytree(evaluated_bundle, folder)
    (folder / "profile.json").write_text("{truncated")
    summary = get_card(folder)["reference_profile"]
    assert summary["problem"].startswith("profile.json cannot be read")


def test_values_of_the_wrong_type_are_left_out_not_a_500(
    evaluated_bundle: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "bundle"
    shutil.copytree(evaluated_bundle, folder)
    meta = json.loads((folder / "bundle.json").read_text())
    meta["data_fingerprint"] = None
    meta["metrics"]["test"]["confusion_matrix"][0][0] = "a"
    meta["metrics"]["test"]["unsupported_labels"] = 5
    meta["metrics"]["data"] = {"source": 5, "counts": {"train": {"3": "x"}}}
    meta["metrics"]["data_fingerprint"] = 7
    (folder / "bundle.json").write_text(json.dumps(meta))
    profile = {"format_version": 1, "labels": LABELS, "n_reference": 48}
    profile |= {"embedding_dim": "wide", "source": 3, "ood": {"method": "knn", "threshold": "x"}}
    (folder / "profile.json").write_text(json.dumps(profile))
    card = get_card(folder)  # the bundle still loads and serves: its card answers too
    assert card["confusion_matrix"] is None and card["metrics"]["unsupported_labels"] == []
    assert card["metrics"]["accuracy"] is not None  # the rest of the section stays
    assert card["data"] == {
        "source": meta["config"]["data"]["source"],  # the recipe's, not the recorded 5
        "version": None,
        "fingerprint": None,
        "splits": None,
        "counts": None,
    }
    summary = card["reference_profile"]
    assert (summary["embedding_dim"], summary["source"], summary["ood_threshold"]) == (None,) * 3
    assert (summary["reference_items"], summary["ood_method"]) == (48, "knn")
    assert summary["problem"] == (
        "profile.json holds values of the wrong type: source, embedding_dim, ood.threshold"
    )
