"""Audio modality: decoding and the ONE log-mel path used by training and serving.

Torch-free on purpose: the serving process imports this module and nothing from training.
Pipeline: soundfile decodes (wav, flac, ogg, mp3, ...) -> the channels are averaged to mono ->
soxr resamples to `sample_rate` -> the centre `clip_seconds` are kept (shorter clips are
zero-padded on both sides) -> a log-mel spectrogram in dB with a floor, float32
`[n_mels, frames]`.

The log-mel step is numpy (`rfft` on framed, Hann-windowed audio and a Slaney mel filterbank):
it reproduces `librosa.feature.melspectrogram(center=True, pad_mode="constant")` followed by
`librosa.power_to_db(ref=1.0, amin=1e-10, top_db=None)`, and the tests check it against
torchaudio and against recorded librosa values. librosa itself is not called here because
importing it pulls numba and its first STFT JIT-compiles for ~20 s: a server must start fast.

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
from pathlib import Path
from typing import Any

import numpy as np

from mlfactory.errors import InputError

INPUT_NAME = "log_mel"
FILE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au")
# Longest accepted recording; checked from the header before decoding.
MAX_SECONDS = 600.0
# Power floor before the log: silence maps to 10 * log10(AMIN) = -100 dB, never -inf.
AMIN = 1e-10
FLOOR_DB = 10.0 * math.log10(AMIN)
# soundfile names the in-memory buffer in its messages; that text differs on every run.
_BUFFER_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>:?\s*")


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
            `MAX_SECONDS` (413), truncated or corrupt (422), NaN/infinite samples (422).
    """
    import soundfile

    if not data:
        raise InputError("empty file: the upload has no bytes", 422)
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
    if not np.isfinite(samples).all():
        raise InputError("corrupt audio: the file holds NaN or infinite samples", 422)
    mono = resample(samples.mean(axis=1, dtype=np.float32), source_rate, target_rate)
    return fix_length(mono, round(clip_seconds * target_rate))


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


def resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample a mono float32 waveform with soxr (high quality); a no-op at equal rates."""
    if source_rate == target_rate:
        return waveform.astype(np.float32, copy=False)
    import soxr

    return np.asarray(soxr.resample(waveform, source_rate, target_rate), dtype=np.float32)


def fix_length(waveform: np.ndarray, length: int) -> np.ndarray:
    """Centre-crop or zero-pad (equally on both sides) a 1-D waveform to `length` samples."""
    size = waveform.shape[0]
    if size >= length:
        start = (size - length) // 2
        return np.ascontiguousarray(waveform[start : start + length], dtype=np.float32)
    left = (length - size) // 2
    return np.pad(waveform, (left, length - size - left)).astype(np.float32, copy=False)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular filters from 0 Hz to Nyquist.

    Same filters as `librosa.filters.mel(sr, n_fft, n_mels)` (its defaults) and
    `torchaudio.functional.melscale_fbanks(..., norm="slaney", mel_scale="slaney").T`.

    Returns:
        float32 array of shape (n_mels, n_fft // 2 + 1).
    """
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges_mel = np.linspace(0.0, _hz_to_mel(sample_rate / 2.0), n_mels + 2)
    edges_hz = _mel_to_hz(edges_mel)
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]  # equal area per filter
    return weights.astype(np.float32)


# Slaney's mel scale: linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    if hz < _MIN_LOG_HZ:
        return hz / _F_SP
    return _MIN_LOG_MEL + math.log(hz / _MIN_LOG_HZ) / _LOG_STEP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    linear = _F_SP * mels
    logarithmic = _MIN_LOG_HZ * np.exp(_LOG_STEP * (mels - _MIN_LOG_MEL))
    return np.where(mels >= _MIN_LOG_MEL, logarithmic, linear)


def log_mel(waveform: np.ndarray, params: Mapping[str, Any], bank: np.ndarray) -> np.ndarray:
    """Log-mel power spectrogram in dB (ref 1.0, floor `FLOOR_DB`) of a mono waveform.

    Frames are centred (the waveform is zero-padded by `n_fft // 2` on both sides) and
    Hann-windowed (periodic), as librosa and torchaudio do by default.

    Args:
        waveform: float32 mono samples.
        params: `n_fft` and `hop_length`.
        bank: the mel filterbank from `mel_filterbank`.

    Returns:
        float32 array (n_mels, 1 + len(waveform) // hop_length).
    """
    n_fft, hop = int(params["n_fft"]), int(params["hop_length"])
    padded = np.pad(waveform.astype(np.float32, copy=False), n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    spectrum = np.fft.rfft(frames * window, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    mel = bank @ power.T.astype(np.float32)
    return (10.0 * np.log10(np.maximum(mel, AMIN))).astype(np.float32)


def frame_count(params: Mapping[str, Any]) -> int:
    """Frames of the log-mel of one clip."""
    samples = round(float(params["clip_seconds"]) * int(params["sample_rate"]))
    return 1 + samples // int(params["hop_length"])


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

    modality = "audio"

    def __init__(self, params: Mapping[str, Any], assets_dir: Path | None = None) -> None:
        self.params = dict(params)
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            if int(self.params[name]) < 1:
                raise ValueError(f"audio preprocessing: {name} must be >= 1")
        if float(self.params["clip_seconds"]) <= 0:
            raise ValueError("audio preprocessing: clip_seconds must be > 0")
        self.bank = mel_filterbank(
            int(self.params["sample_rate"]), int(self.params["n_fft"]), int(self.params["n_mels"])
        )

    def __call__(self, raw: bytes) -> dict[str, np.ndarray]:
        return {INPUT_NAME: log_mel(load_waveform(raw, self.params), self.params, self.bank)}

    def input_shapes(self) -> dict[str, list[int]]:
        """ONNX input shapes for one item (batch axis excluded)."""
        return {INPUT_NAME: [int(self.params["n_mels"]), frame_count(self.params)]}
