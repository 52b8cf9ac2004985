"""Audio modality: decoding and the ONE log-mel path used by training and serving.

Torch-free on purpose: the serving process imports this module and nothing from training.
Pipeline: soundfile decodes (wav, flac, ogg, mp3, ...) -> the channels are averaged to mono ->
soxr resamples to `sample_rate` -> the centre `clip_seconds` are kept (shorter clips are
zero-padded on both sides) -> a log-mel spectrogram in dB with a floor, float32
`[n_mels, frames]` (numpy, see `log_mel`).

Long inputs are cropped, not decoded whole: only the centre window is read (a seek), so cost
does not grow with length. Recordings longer than `MAX_SECONDS` are refused (413) from the
file header, before any sample is decoded: the centre two seconds of an hour-long recording are
not a meaningful summary of it, and a client should cut such recordings into clips.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlfactory.config.constraints import bounded
from mlfactory.errors import ConfigError, InputError
from mlfactory.modalities.base import (
    EMPTY_FILE,
    ApiInput,
    Augment,
    Baseline,
    Encoder,
    Modality,
    rounded,
)
from mlfactory.modalities.log_mel import fix_length, frame_count, log_mel, mel_filterbank, resample

INPUT_NAME = "log_mel"
FILE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au")
CONTENT_TYPES = ("audio/wav", "audio/flac", "audio/ogg", "audio/mpeg", "audio/aiff", "audio/basic")
# Longest accepted recording; checked from the header before decoding.
MAX_SECONDS = 600.0
# Largest accepted sample magnitude, as a multiple of full scale (1.0). Integer formats never
# exceed 1; float formats may, a little. Far beyond this (a float WAV of 1e30) the power
# spectrum overflows float32 and the model would see infinities.
MAX_PEAK = 1000.0
# soundfile names the in-memory buffer in its messages; that text differs on every run.
_BUFFER_NAME = r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>"
_BUFFER_REPR = re.compile(_BUFFER_NAME + r":?\s*")
# `AudioModality.test_input` lasts this long, or the clip if shorter (shorter inputs are padded).
TEST_SECONDS = 1.0


@dataclass
class AudioPreprocessing:
    """Waveform and log-mel parameters shared by training and serving."""

    sample_rate: int = bounded(16000, ge=1000, le=384000)
    clip_seconds: float = bounded(2.0, gt=0.0, le=MAX_SECONDS)
    n_fft: int = bounded(512, ge=16, le=65536)
    hop_length: int = bounded(160, ge=1, le=65536)
    n_mels: int = bounded(64, ge=1, le=1024)

    def cross_check(self, prefix: str) -> None:
        """Every mel band needs a frequency bin, and the clip must hold at least one hop."""
        bins = self.n_fft // 2 + 1
        if self.n_mels > bins:
            raise ConfigError(
                f"{prefix}n_mels: {self.n_mels} bands need at least as many frequency bins, but "
                f"n_fft {self.n_fft} gives {bins}: lower n_mels or raise n_fft"
            )
        samples = round(self.clip_seconds * self.sample_rate)
        if samples < self.hop_length:
            raise ConfigError(
                f"{prefix}clip_seconds: {self.clip_seconds} s is {samples} samples, shorter than "
                f"hop_length {self.hop_length}: use a longer clip or a shorter hop"
            )


def load_waveform(data: bytes, params: Mapping[str, Any]) -> np.ndarray:
    """Decode audio bytes into the fixed-length mono waveform the model hears.

    Args:
        data: the bytes of an audio file in any format libsndfile reads (wav, flac, ogg, mp3).
        params: `sample_rate` and `clip_seconds` (see `AudioPreprocessing`).

    Returns:
        float32 array of `round(clip_seconds * sample_rate)` samples: the centre of the
        recording, resampled, zero-padded on both sides when the recording is shorter.

    Raises:
        InputError: empty or zero-length audio (422), not audio (415), longer than
            `MAX_SECONDS` (413), truncated or corrupt (422), NaN/infinite samples or samples
            over `MAX_PEAK` (422).
    """
    import soundfile

    if not data:
        raise InputError(EMPTY_FILE, 422)
    target_rate = int(params["sample_rate"])
    clip_seconds = float(params["clip_seconds"])
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as audio:
            source_rate, total = int(audio.samplerate), int(audio.frames)
            _check_length(total, source_rate)
            window = min(total, math.ceil(clip_seconds * source_rate))
            audio.seek((total - window) // 2)
            samples = audio.read(window, dtype="float32", always_2d=True)
    except InputError:
        raise
    except soundfile.LibsndfileError as exc:
        message = _BUFFER_REPR.sub("", str(exc)).strip()
        if "not recognised" in message.lower():
            raise InputError("not audio: the file is in no format soundfile reads", 415) from None
        raise InputError(f"corrupt or truncated audio: {message}", 422) from None
    except Exception as exc:  # decoders of untrusted bytes fail in many ways
        raise InputError(f"corrupt or truncated audio: {type(exc).__name__}: {exc}", 422) from None
    if samples.shape[0] == 0:
        raise InputError("no audio: the file decodes to zero samples (empty or truncated)", 422)
    reason = _sample_problem(samples)
    if reason is not None:
        raise InputError(f"corrupt audio: {reason}", 422)
    mono = resample(samples.mean(axis=1, dtype=np.float32), source_rate, target_rate)
    return fix_length(mono, round(clip_seconds * target_rate))


def _sample_problem(samples: np.ndarray) -> str | None:
    """Why decoded samples cannot be heard as audio (NaN, infinite, far out of range), or None."""
    if not np.isfinite(samples).all():
        return "the file holds NaN or infinite samples"
    peak = float(np.abs(samples).max(initial=0.0))
    if peak > MAX_PEAK:
        return (
            f"samples reach {peak:.3g}, over {MAX_PEAK:g} times full scale "
            "(float samples belong in [-1, 1])"
        )
    return None


def _check_length(frames: int, rate: int) -> None:
    if frames <= 0:
        raise InputError("no audio: the file holds zero samples (empty or truncated)", 422)
    seconds = frames / rate
    if seconds > MAX_SECONDS:
        raise InputError(
            f"audio too long: {seconds:.0f} s exceeds the limit of {MAX_SECONDS:.0f} s "
            f"({MAX_SECONDS / 60:.0f} minutes); cut the recording into shorter clips",
            413,
        )


def spec_augment(
    arrays: dict[str, np.ndarray],
    rng: np.random.Generator,
    freq_mask: int = 8,
    time_mask: int = 20,
    masks: int = 2,
) -> dict[str, np.ndarray]:
    """SpecAugment for training only: `masks` random frequency and time bands set to the mean.

    Masked bands take the clip's mean level rather than 0 dB, which on a dB scale would be a
    loud band. Serving never calls this.
    """
    spectrogram = arrays[INPUT_NAME].copy()
    fill = float(spectrogram.mean())
    n_mels, n_frames = spectrogram.shape
    for _ in range(masks):
        width = int(rng.integers(0, freq_mask + 1))
        start = int(rng.integers(0, max(1, n_mels - width + 1)))
        spectrogram[start : start + width, :] = fill
        width = int(rng.integers(0, time_mask + 1))
        start = int(rng.integers(0, max(1, n_frames - width + 1)))
        spectrogram[:, start : start + width] = fill
    return {**arrays, INPUT_NAME: spectrogram}


class AudioEncoder:
    """Turns raw audio file bytes into the model's log-mel input."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)
        self.bank = mel_filterbank(
            int(self.params["sample_rate"]), int(self.params["n_fft"]), int(self.params["n_mels"])
        )

    def __call__(self, raw: bytes) -> dict[str, np.ndarray]:
        return {INPUT_NAME: log_mel(load_waveform(raw, self.params), self.params, self.bank)}

    def input_shapes(self) -> dict[str, list[int]]:
        """ONNX input shapes for one item (batch axis excluded)."""
        return {INPUT_NAME: [int(self.params["n_mels"]), frame_count(self.params)]}

    def input_dtypes(self) -> dict[str, type[np.generic]]:
        """ONNX input element types."""
        return {INPUT_NAME: np.float32}


def tone_clip(sample_rate: int, seconds: float) -> np.ndarray:
    """A plucked-string-like note: a 220 Hz fundamental with its harmonics below the Nyquist
    frequency, a 10 ms attack and an exponential decay, over faint seeded noise; float32 in
    [-1, 1], `round(seconds * sample_rate)` samples (at least one)."""
    times = np.arange(max(1, round(seconds * sample_rate))) / sample_rate
    partials = [k for k in range(1, 9) if 220.0 * k < sample_rate / 2]
    note = sum(np.sin(2 * np.pi * 220.0 * k * times) / k for k in partials)
    envelope = np.minimum(times / 0.01, 1.0) * np.exp(-3.0 * times)
    noise = np.random.default_rng(0).normal(0.0, 0.003, times.shape)
    clip = 0.5 * note * envelope / max(1.0, float(np.abs(note).max(initial=0.0))) + noise
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def check_audio_file(data: bytes) -> str | None:
    """Why `data` is not usable audio, or None: it must decode with soundfile to at least one
    finite frame and last no longer than serving accepts (`MAX_SECONDS`)."""
    import soundfile

    if not data:
        return EMPTY_FILE
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as audio:
            # Serving refuses longer recordings (413): training on one would fail in the loader.
            seconds = audio.frames / audio.samplerate
            if seconds > MAX_SECONDS:
                return f"audio too long: {seconds:.0f} s exceeds the limit of {MAX_SECONDS:.0f} s"
            samples = audio.read(dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, TypeError, EOFError) as exc:
        # soundfile.LibsndfileError is a RuntimeError; short garbage can raise the others.
        return f"not readable audio: {re.sub(_BUFFER_NAME, 'the file', str(exc)).strip()}"
    if samples.shape[0] == 0:
        return "audio has no frames"
    reason = _sample_problem(samples)
    return None if reason is None else f"corrupt audio: {reason}"


class AudioModality(Modality):
    """Audio clips: uploaded files in any format libsndfile reads, as a log-mel spectrogram."""

    name = "audio"
    preprocessing_class = AudioPreprocessing
    api_input = ApiInput("files", CONTENT_TYPES, FILE_SUFFIXES)
    file_suffixes = FILE_SUFFIXES
    hf_feature = "Audio"
    hf_default_suffix = ".wav"

    def encoder(self, params: Mapping[str, Any], assets_dir: Path | None = None) -> Encoder:
        """Audio encoders need no assets."""
        return AudioEncoder(params)

    def test_input(self, params: Mapping[str, Any]) -> bytes:
        """A one-second note (`tone_clip`, or the clip's length if shorter) as a 16-bit WAV
        file at the bundle's sample rate, as a client would upload it."""
        import soundfile

        rate = int(params["sample_rate"])
        clip = tone_clip(rate, min(TEST_SECONDS, float(params["clip_seconds"])))
        buffer = io.BytesIO()
        soundfile.write(buffer, clip, rate, format="WAV", subtype="PCM_16")
        return buffer.getvalue()

    def check_file(self, data: bytes) -> str | None:
        """See `check_audio_file`."""
        return check_audio_file(data)

    def describe(
        self, raw: bytes, encoded: Mapping[str, np.ndarray], params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """`duration_s`, `sample_rate`, `channels` (header) and `mean_db`, the mean log-mel
        level of the clip the model heard (a loudness proxy)."""
        import soundfile

        info = soundfile.info(io.BytesIO(raw))
        return {
            "duration_s": rounded(info.frames / info.samplerate),
            "sample_rate": int(info.samplerate),
            "channels": int(info.channels),
            "mean_db": rounded(np.mean(encoded[INPUT_NAME])),
        }

    def augmentation(self) -> Augment | None:
        """SpecAugment: two frequency and two time masks per clip."""
        return spec_augment

    def baseline(self, params: Mapping[str, Any]) -> Baseline:
        """Logistic regression on each clip's log-mel averaged over time (one value per band)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler

        encoder = AudioEncoder(params)

        def band_means(raws: list[bytes]) -> np.ndarray:
            return np.stack([encoder(raw)[INPUT_NAME].mean(axis=1) for raw in raws])

        model = make_pipeline(
            FunctionTransformer(band_means), StandardScaler(), LogisticRegression(max_iter=300)
        )
        return Baseline("logistic regression on mean log-mel per band", model)


MODALITY = AudioModality()
