"""The model card of a trained bundle: everything it shows comes from the training run."""

from __future__ import annotations

from mlfactory.bundle import load_bundle
from mlfactory.model_card import model_card
from mlfactory.training.train import TrainResult


def test_the_card_of_a_trained_bundle_holds_its_evaluation_and_data(
    trained_digits: TrainResult,
) -> None:
    card = model_card(load_bundle(trained_digits.bundle.path))
    dataset, stored = trained_digits.dataset, trained_digits.bundle.meta.metrics["test"]
    assert card["labels"] == dataset.labels
    assert card["metrics"]["accuracy"] == stored["accuracy"]
    assert card["metrics"]["test_items"] == len(dataset.split("test"))
    matrix = card["confusion_matrix"]
    assert sum(map(sum, matrix)) == len(dataset.split("test"))
    trace = sum(matrix[i][i] for i in range(len(matrix)))
    assert trace / len(dataset.split("test")) == card["metrics"]["accuracy"]
    supports = {row["label"]: row["support"] for row in card["per_class"]}
    assert supports == {label: dataset.counts()["test"].get(label, 0) for label in dataset.labels}
    data = card["data"]
    assert data["fingerprint"] == dataset.fingerprint
    assert data["source"] == dataset.source
    assert data["splits"] == {s: len(dataset.split(s)) for s in ("train", "val", "test")}
    assert data["counts"] == dataset.counts()
    assert card["lineage"]["mlflow_run_id"] == trained_digits.mlflow_run_id
    profile = card["reference_profile"]  # the monitoring profile written at export
    assert profile["problem"] is None and profile["reference_items"] >= 20
    assert profile["ood_threshold"] is not None and "width" in profile["features"]
