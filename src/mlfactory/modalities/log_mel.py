"""The log-mel spectrogram of a waveform, in numpy: the audio modality's signal processing.

`log_mel` reproduces `librosa.feature.melspectrogram(center=True, pad_mode="constant")` followed
by `librosa.power_to_db(ref=1.0, amin=1e-10, top_db=None)` (`rfft` on framed, Hann-windowed
audio and a Slaney mel filterbank); the tests check it against torchaudio and against recorded
librosa values. librosa itself is not called here because importing it pulls numba and its
first STFT JIT-compiles for ~20 s: a server must start fast. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

# Power floor before the log: silence maps to 10 * log10(AMIN) = -100 dB, never -inf.
AMIN = 1e-10
FLOOR_DB = 10.0 * math.log10(AMIN)


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
