"""The three pages of the web UI in real Chromium, on an image, a text and an audio bundle."""

from __future__ import annotations

from pathlib import Path

import httpx
import soundfile
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from mlfactory.serving.process import free_port
from mlfactory.times import utc_time
from mlfactory.ui.launch import start_ui
from tests.ui.browser import (
    WAIT_S,
    click_button,
    main_text,
    main_text_showing,
    result_text,
    type_into,
    wait_for,
    wait_for_text,
)
from tests.ui.conftest import Deployment

FIXTURES = Path(__file__).parents[1] / "fixtures"
SAMPLES = FIXTURES / "sonic-pi" / "samples"
FLAC = SAMPLES / "elec_bong.flac"
ARTICLE = (
    "Saudi Arabia said it would cut crude oil output as prices fell on the world market, "
    "and OPEC ministers meet next week."
)


def classify_files(driver: WebDriver, deployment: Deployment, *paths: Path) -> str:
    """Upload `paths` on the Predict page, click Classify; the first result's text."""
    driver.get(deployment.ui.url)
    wait_for(driver, "input[type='file']").send_keys("\n".join(str(p) for p in paths))
    for path in paths:
        wait_for_text(driver, path.name)
    click_button(driver, "Classify")
    return result_text(driver)


def api_label(deployment: Deployment, **request: object) -> dict:  # type: ignore[type-arg]
    """The API's own answer for the same input, to compare the page with."""
    response = httpx.post(f"{deployment.api.url}/v1/predict", timeout=30, **request)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return dict(response.json()["predictions"][0])


def test_a_held_out_digit_gets_its_label_and_probabilities(
    chromium: WebDriver, image_deployment: Deployment, held_out_digit: Path, tmp_path: Path
) -> None:
    image = image_deployment
    result = classify_files(chromium, image, held_out_digit)
    expected = api_label(
        image, files=[("files", (held_out_digit.name, held_out_digit.read_bytes()))]
    )
    assert "Predicted label" in result and f"\n{expected['label']}\n" in f"\n{result}\n"
    assert f"{expected['score']:.3f}" in result
    flag = "In distribution" if expected["in_distribution"] else "Out of distribution"
    assert flag in result  # the digits bundle has a reference profile: inputs are scored
    box = chromium.find_element(By.CSS_SELECTOR, ".st-key-result-0")
    assert box.find_elements(By.CSS_SELECTOR, "[data-testid='stVegaLiteChart']")  # the bars
    assert box.find_elements(By.TAG_NAME, "img")  # the uploaded digit, shown
    chromium.save_screenshot(str(tmp_path / "predict-image.png"))


def test_a_pasted_text_is_classified(
    chromium: WebDriver, tiny_deployments: dict[str, Deployment], tmp_path: Path
) -> None:
    text = tiny_deployments["text"]
    chromium.get(text.ui.url)
    type_into(chromium, "textarea", ARTICLE)
    # The page states the server's limits (`MLFACTORY_MAX_FILES`, `MLFACTORY_MAX_TEXT_CHARS`)
    wait_for_text(chromium, "The API takes up to 64 texts a request, each of at most 10,000")
    click_button(chromium, "Classify")
    result = result_text(chromium)
    expected = api_label(text, json={"text": ARTICLE})
    assert f"\n{expected['label']}\n" in f"\n{result}\n"
    assert "Saudi Arabia said" in result
    chromium.save_screenshot(str(tmp_path / "predict-text.png"))


def test_pasted_lines_are_classified_one_text_each(
    chromium: WebDriver, tiny_deployments: dict[str, Deployment]
) -> None:
    text = tiny_deployments["text"]
    lines = [ARTICLE, "Wheat exports rose in the third quarter."]
    chromium.get(text.ui.url)
    type_into(chromium, "textarea", "\n\n".join(lines))  # a blank line between: no text
    wait_for(chromium, "[data-testid='stCheckbox'] label").click()
    click_button(chromium, "Classify")
    expected = httpx.post(f"{text.api.url}/v1/predict", json={"texts": lines}, timeout=30)
    for index, (line_number, line) in enumerate([(1, lines[0]), (3, lines[1])]):
        result = result_text(chromium, index)
        label = expected.json()["predictions"][index]["label"]
        assert f"line {line_number}" in result and line in result
        assert f"\n{label}\n" in f"\n{result}\n"
    assert not chromium.find_elements(By.CSS_SELECTOR, ".st-key-result-2")


def test_an_uploaded_clip_is_playable_and_classified(
    chromium: WebDriver, tiny_deployments: dict[str, Deployment], tmp_path: Path
) -> None:
    audio = tiny_deployments["audio"]
    result = classify_files(chromium, audio, FLAC)
    expected = api_label(audio, files=[("files", (FLAC.name, FLAC.read_bytes()))])
    assert f"\n{expected['label']}\n" in f"\n{result}\n"
    player = chromium.find_element(By.CSS_SELECTOR, ".st-key-result-0 audio")
    chromium.execute_script("arguments[0].load()", player)  # playable: Chromium decodes it
    # Compared in the page: until its metadata loads the duration is NaN (None in Python).
    WebDriverWait(chromium, WAIT_S).until(
        lambda _: chromium.execute_script("return arguments[0].duration > 0", player)
    )
    duration = chromium.execute_script("return arguments[0].duration", player)
    assert abs(duration - soundfile.info(str(FLAC)).duration) < 0.05
    chromium.save_screenshot(str(tmp_path / "predict-audio.png"))


def test_a_file_the_browser_cannot_show_gets_a_note_not_its_bytes(
    chromium: WebDriver, tiny_deployments: dict[str, Deployment], tmp_path: Path
) -> None:
    """A WAV named without a suffix (no media type) and an AIFF clip (which browsers do not
    play) are classified; each is shown by name and size, not as binary text or a dead
    player."""
    samples, rate = soundfile.read(str(FLAC))
    bare, aiff = tmp_path / "clip", tmp_path / "clip.aiff"
    soundfile.write(str(bare), samples, rate, format="WAV")
    soundfile.write(str(aiff), samples, rate, format="AIFF")
    audio = tiny_deployments["audio"]
    classify_files(chromium, audio, bare, aiff)
    for index, path in enumerate((bare, aiff)):
        result = result_text(chromium, index)
        assert f"No preview of {path.name} (" in result and "Predicted label" in result
        assert f", {path.stat().st_size:,} bytes)." in result
        assert "RIFF" not in result and "FORM" not in result  # no header bytes as text
        box = chromium.find_element(By.CSS_SELECTOR, f".st-key-result-{index}")
        assert not box.find_elements(By.TAG_NAME, "audio")
    assert "No preview of clip.aiff (audio/" in result_text(chromium, 1)


def test_a_file_the_model_cannot_read_is_left_out_and_the_rest_classified(
    chromium: WebDriver, image_deployment: Deployment, held_out_digit: Path, tmp_path: Path
) -> None:
    """The page checks each file with the decoder the server uses: the API would refuse the
    whole request for one unreadable file."""
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("these are notes, not pixels\n")
    image = image_deployment
    result = classify_files(chromium, image, not_an_image, held_out_digit)
    expected = api_label(
        image, files=[("files", (held_out_digit.name, held_out_digit.read_bytes()))]
    )
    assert f"\n{expected['label']}\n" in f"\n{result}\n" and held_out_digit.name in result
    assert len(chromium.find_elements(By.CSS_SELECTOR, ".st-key-result-1")) == 0  # one result
    refusal = httpx.post(
        f"{image.api.url}/v1/predict",
        files=[("files", (not_an_image.name, not_an_image.read_bytes()))],
    )
    assert refusal.status_code == 415  # the server's reason, said of the file by name
    reason = refusal.json()["detail"].removeprefix("file 0 ('notes.png'): ")
    warning = wait_for(chromium, "[data-testid='stAlertContentWarning']").text
    assert warning == f"notes.png is left out: {reason}"
    assert "Traceback" not in main_text(chromium)


def test_an_input_the_api_refuses_shows_its_detail(
    chromium: WebDriver, tiny_deployments: dict[str, Deployment]
) -> None:
    """A text of invisible characters only: the page sends it, the API refuses it."""
    text = tiny_deployments["text"]
    chromium.get(text.ui.url)
    type_into(chromium, "textarea", "\u200b")  # a zero-width space
    click_button(chromium, "Classify")
    alert = wait_for(chromium, "[data-testid='stAlertContentError']").text
    refusal = httpx.post(f"{text.api.url}/v1/predict", json={"text": "\u200b"})
    assert refusal.status_code == 422
    assert alert == f"The API refused the input: {refusal.json()['detail']} (422)"
    assert "Traceback" not in main_text(chromium)


def test_an_unreachable_api_is_a_message_not_a_traceback(
    chromium: WebDriver, tmp_path: Path
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    ui = start_ui(nowhere, tmp_path / "ui.log")
    try:
        for page, header in (
            ("", "Predict"),
            ("predict", "Predict"),  # by its name too, not "Page not found"
            ("model-card", "Model card"),
            ("monitoring", "Monitoring"),
        ):
            chromium.get(f"{ui.url}/{page}")
            alert = wait_for(chromium, "[data-testid='stAlertContentError']").text
            # the URL a code span: shown as it is, never linked
            assert alert.startswith(f"cannot reach the API at {nowhere}")
            assert "Traceback" not in main_text(chromium)
            assert main_text(chromium).startswith(header)  # each page says which it is
    finally:
        ui.stop()


def test_the_model_card_page_of_each_bundle(
    chromium: WebDriver, deployments: dict[str, Deployment], tmp_path: Path
) -> None:
    for modality, deployment in deployments.items():
        card = httpx.get(f"{deployment.api.url}/v1/model/card").json()
        chromium.get(f"{deployment.ui.url}/model-card")
        exported = card["created_at"]  # None in the tiny bundles
        main_text_showing(
            chromium,
            f"Model card: {card['name']} {card['version']}",
            "Reference profile",
            ", ".join(card["labels"]),
            f"exported {utc_time(exported)} UTC" if exported else "unknown time",
        )
        chromium.save_screenshot(str(tmp_path / f"card-{modality}.png"))
    digits = httpx.get(f"{deployments['image'].api.url}/v1/model/card").json()
    chromium.get(f"{deployments['image'].ui.url}/model-card")
    accuracy, run = f"{digits['metrics']['accuracy']:.4g}", digits["lineage"]["mlflow_run_id"]
    text = main_text_showing(chromium, "Lineage", accuracy, run, "(90% chance)")
    assert digits["data"]["fingerprint"] in text
    # evaluated on the data it trained on: said, without a warning
    assert f"Computed on data fingerprint {digits['data']['fingerprint']}." in text
    assert not chromium.find_elements(By.CSS_SELECTOR, "[data-testid='stAlertContentWarning']")
    # its small validation split held out too few inputs for a 1 % threshold: the rate it gives
    profile = digits["reference_profile"]
    expected, low, high = (
        profile["ood_expected_rate"],
        profile["ood_rate_low"],
        profile["ood_rate_high"],
    )
    assert (
        f"(false-positive rate {expected:.2g}: too few held-out inputs for 0.01; for this "
        f"profile {low:.2g} to {high:.2g} (90% chance))"
    ) in text
    table = chromium.find_element(By.CSS_SELECTOR, "[data-testid='stTable']").text
    assert all(label in table for label in digits["labels"])
    assert chromium.find_elements(By.CSS_SELECTOR, "[data-testid='stVegaLiteChart']")
