"""The Predict page against a server's limits, in Chromium: every text and file the server
takes goes through, and what it would refuse is named before anything is sent."""

from __future__ import annotations

import wave
from contextlib import ExitStack
from pathlib import Path

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from mlfactory.serving.settings import MEGABYTE
from tests.serving.tiny_bundles import tiny_bundle
from tests.ui.browser import (
    click_button,
    main_text_showing,
    result_text,
    type_into,
    wait_for,
    wait_for_text,
)
from tests.ui.conftest import Deployment, deploy
from tests.ui.test_pages import SAMPLES, classify_files

WAV_HEADER_BYTES = 44  # a PCM WAV's RIFF, fmt and data headers


def nothing_was_sent(deployment: Deployment) -> bool:
    metrics = httpx.get(f"{deployment.api.url}/metrics", timeout=30).text
    return 'endpoint="/v1/predict"' not in metrics


def write_wav(path: Path, size: int) -> Path:
    """A real 16-bit mono 8 kHz WAV of exactly `size` bytes (a tone, then silence)."""
    frames = (size - WAV_HEADER_BYTES) // 2
    with wave.open(str(path), "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(8000)
        tone = bytes([0, 16, 0, 240]) * 2000
        clip.writeframes(tone + bytes(2 * frames - len(tone)))
    assert path.stat().st_size == size
    return path


def classify_text(driver: WebDriver, deployment: Deployment, text: str) -> None:
    """Paste `text` on the Predict page, one text per line, and click Classify."""
    driver.get(deployment.ui.url)
    type_into(driver, "textarea", text)
    wait_for(driver, "[data-testid='stCheckbox'] label").click()
    click_button(driver, "Classify")


def test_each_line_is_held_to_the_servers_limit_of_a_text(
    chromium: WebDriver, tmp_path: Path
) -> None:
    """A server that takes 3 texts of at most 50 characters: three lines of 48 are all sent
    (the field does not cut them at 50 in all), a longer line is named, and a fourth line is
    one text too many; nothing reaches the API until the input fits."""
    with ExitStack() as stack:
        bundle = tiny_bundle(tmp_path / "bundle", "text")
        text = deploy(stack, bundle, tmp_path / "text", max_files="3", max_text_chars="50")
        lines = [f"{word} " * 8 for word in ("crude oil", "wheat", "tanker ship")]
        lines = [line[:48] for line in lines]
        too_long = [lines[0], "grain " * 10, lines[2]]
        for typed, warning in [
            (too_long, "line 2 has 60 characters: the API takes texts of at most 50 characters"),
            ([*lines, "oil"], "4 texts: the API takes at most 3 a request"),
        ]:
            classify_text(chromium, text, "\n".join(typed))
            assert wait_for(chromium, "[data-testid='stAlertContentWarning']").text == warning
        main_text_showing(
            chromium, "The API takes up to 3 texts a request, each of at most 50 characters."
        )
        assert nothing_was_sent(text)
        classify_text(chromium, text, "\n".join(lines))
        expected = httpx.post(f"{text.api.url}/v1/predict", json={"texts": lines}, timeout=30)
        for index, line in enumerate(lines):
            result = result_text(chromium, index)
            assert f"line {index + 1}" in result and line.strip() in result
            label = expected.json()["predictions"][index]["label"]
            assert f"\n{label}\n" in f"\n{result}\n"


def test_files_over_the_servers_limits_are_refused_before_they_are_sent(
    chromium: WebDriver, tmp_path: Path
) -> None:
    """A server that takes one file of at most 2 MiB (2,097,152 bytes) a request: Streamlit's
    uploader, which counts a MB as 10**6 bytes, lets through a file of exactly that (its limit
    is rounded up: 3MB); the page states the exact limit, and too many or too large files get
    a warning that says which limit, and no request."""
    small, other = SAMPLES / "bd_fat.flac", SAMPLES / "tabla_te1.flac"
    largest = write_wav(tmp_path / "largest.wav", 2 * MEGABYTE)
    over = write_wav(tmp_path / "over.wav", 2 * MEGABYTE + 2)
    with ExitStack() as stack:
        bundle = tiny_bundle(tmp_path / "bundle", "audio")
        limits = {"max_files": "1", "max_upload_bytes": str(2 * MEGABYTE)}
        audio = deploy(stack, bundle, tmp_path / "audio", **limits)
        for chosen, warning in [
            ((small, other), "2 files chosen: the API takes at most 1 a request"),
            (
                (over,),
                "over.wav is 2,097,154 bytes: the API takes files of at most 2,097,152 bytes "
                "(2 MiB)",
            ),
        ]:
            chromium.get(audio.ui.url)
            wait_for_text(chromium, "3MB per file")
            wait_for_text(chromium, "each of at most 2,097,152 bytes (2 MiB)")
            wait_for(chromium, "input[type='file']").send_keys("\n".join(map(str, chosen)))
            for path in chosen:
                wait_for_text(chromium, path.name)
            click_button(chromium, "Classify")
            assert wait_for(chromium, "[data-testid='stAlertContentWarning']").text == warning
        assert nothing_was_sent(audio)
        result = classify_files(chromium, audio, largest)
        assert "Predicted label" in result and largest.name in result
        assert not chromium.find_elements(By.CSS_SELECTOR, "[data-testid='stAlertContentError']")
