"""`mlfactory report`: the model card as one HTML page, self-contained and escaped."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from typer.testing import CliRunner

from mlfactory.bundle import load_bundle
from mlfactory.card_report import render_page
from mlfactory.cli import app
from mlfactory.model_card import model_card
from mlfactory.monitoring.profile import load_profile
from mlfactory.times import utc_time
from mlfactory.training.train import TrainResult


def test_the_report_shows_the_card_of_a_trained_bundle(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    out = tmp_path / "card.html"
    result = CliRunner().invoke(app, ["report", str(trained_digits.bundle.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    card = model_card(load_bundle(trained_digits.bundle.path))
    assert f"Model card: {card['name']} {card['version']}" in page
    assert f"exported {utc_time(card['created_at'])} UTC</p>" in page
    assert f"<b>{card['metrics']['accuracy']:.4g}</b>" in page
    assert card["data"]["fingerprint"] in page and card["lineage"]["mlflow_run_id"] in page
    confusion = re.search(r"<table class='confusion'>.*?</table>", page, re.S)
    assert confusion is not None
    cells = [int(n) for n in re.findall(r"<td style='[^']*'>(\d+)</td>", confusion.group(0))]
    assert cells == [n for row in card["confusion_matrix"] for n in row]
    profile = card["reference_profile"]  # written at export
    assert profile is not None and profile["problem"] is None
    assert f"{profile['source']}, {profile['reference_items']} items" in page
    # a small validation split: too few held-out inputs for a 1 % threshold, so the card gives
    # the rate the threshold does give, 1 / (n + 1), beside the one asked for
    ood = load_profile(trained_digits.bundle.path).ood  # type: ignore[union-attr]
    expected = ood.expected_rate
    assert profile["ood_expected_rate"] == expected > profile["ood_false_positive_rate"] == 0.01
    # and where this profile's own rate lies, given how few were held out
    low, high = ood.rate_range(0.9)
    assert (profile["ood_rate_low"], profile["ood_rate_high"]) == (low, high)
    assert (
        f"(false-positive rate {expected:.2g}: too few held-out inputs for 0.01; for this "
        f"profile {low:.2g} to {high:.2g} (90% chance))"
    ) in page
    # each label's scores with four decimals, as the accuracy (1.0000 beside 0.9474, not 1)
    for row in card["per_class"]:
        assert f"<td class='num'>{row['precision']:.4f}</td>" in page
    # Self-contained: nothing is fetched, from a host or from a file beside it.
    assert not re.search(r"\b(src|href)\s*=", page) and "url(" not in page


def test_text_from_the_bundle_is_escaped(trained_digits: TrainResult, tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, folder)
    bundle = load_bundle(folder)
    bundle.meta.name = "<script>alert(1)</script>"
    bundle.meta.git_commit = "<img src=x onerror=alert(2)>"
    page = render_page(model_card(bundle))
    assert "<script>alert" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_missing_bundle_is_one_error_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nope"), "--out", "x.html"])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1


def test_the_report_never_overwrites_what_it_reads(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    """`--out` naming the prediction log or a file of the bundle is refused before anything
    is written: both stay byte for byte as they were."""
    folder = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, folder)
    log = tmp_path / "predictions.db"
    log.write_bytes(b"SQLite format 3\x00 stand-in: never read, the path is refused first")
    linked = tmp_path / "linked.html"
    linked.hardlink_to(log)  # another name of the same file
    before = {p: p.read_bytes() for p in [log, *folder.iterdir()]}
    cases = {
        str(log): f"--out {log} is the prediction log: write the report elsewhere",
        str(linked): f"--out {linked} is the prediction log: write the report elsewhere",
        str(folder / "model.onnx"): f"is inside the bundle {folder}: write the report elsewhere",
        str(folder / "card.html"): f"is inside the bundle {folder}",
        str(tmp_path): f"--out {tmp_path} is a folder: give a file name, e.g. report.html",
    }
    for (out, message), given in zip(
        cases.items(), [str(log), f"sqlite:///{log}"] * 2 + [str(log)], strict=True
    ):
        args = ["report", str(folder), "--out", out, "--log", given]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: --out ") and message in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in [log, *folder.iterdir()]} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "linked.html", "predictions.db"]
