"""Audio preprocessing on real clips: golden values, resampling, crop/pad, mono, bad bytes.

The clips are real recordings copied from Debian packages into tests/fixtures (see its README).
Reference values come from independent implementations: torchaudio at test time, and librosa
values recorded once (librosa's first call JIT-compiles for ~20 s, too slow for a unit test).
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mlfactory.errors import ConfigError, InputError
from mlfactory.modalities import get_modality
from mlfactory.modalities.audio import (
    INPUT_NAME,
    MAX_SECONDS,
    AudioEncoder,
    load_waveform,
    spec_augment,
)
from mlfactory.modalities.log_mel import FLOOR_DB, mel_filterbank

FIXTURES = Path(__file__).parents[1] / "fixtures"
QUETZAL = FIXTURES / "tuxpaint/stamps/animals/birds/quetzal.ogg"  # mono, 44.1 kHz, 0.93 s
STEREO = FIXTURES / "tuxpaint/stamps/animals/mammals/giraffe_desc_fr.ogg"  # stereo, 1.57 s
KICK = FIXTURES / "sonic-pi/samples/bd_fat.flac"  # mono flac, 0.23 s
PARAMS = {"sample_rate": 16000, "clip_seconds": 2.0, "n_fft": 512, "hop_length": 160, "n_mels": 64}

# librosa 0.11 on quetzal.ogg's waveform (`load_waveform(raw, PARAMS)`), recorded with:
#   D = librosa.power_to_db(librosa.feature.melspectrogram(y=w, sr=16000, n_fft=512,
#       hop_length=160, n_mels=64), ref=1.0, amin=1e-10, top_db=None)
#   D.mean(axis=1)[::8], D[::8, 100], D.mean()
LIBROSA_BAND_MEANS = [-65.548, -63.547, -53.747, -54.930, -57.091, -62.708, -62.411, -65.295]
LIBROSA_FRAME_100 = [-20.161, -25.137, 7.088, -15.222, -9.864, -17.450, -22.806, -26.970]
LIBROSA_MEAN = -60.696


def encode_bytes(
    samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None
) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def params(**changes: float) -> dict[str, float]:
    return {**PARAMS, **changes}


def test_real_clip_has_fixed_shape_and_matches_torchaudio() -> None:
    import torch
    import torchaudio

    raw = QUETZAL.read_bytes()
    encoder = get_modality("audio").encoder(PARAMS)
    log_mel = encoder(raw)[INPUT_NAME]
    assert log_mel.shape == (64, 201) and log_mel.dtype == np.float32
    assert encoder.input_shapes() == {INPUT_NAME: [64, 201]}

    mel = torchaudio.transforms.MelSpectrogram(
        16000,
        n_fft=512,
        hop_length=160,
        n_mels=64,
        norm="slaney",
        mel_scale="slaney",
        pad_mode="constant",
        power=2.0,
    )
    to_db = torchaudio.transforms.AmplitudeToDB("power", top_db=None)
    reference = to_db(mel(torch.from_numpy(load_waveform(raw, PARAMS)))).numpy()
    np.testing.assert_allclose(log_mel, reference, atol=2e-3)
    assert log_mel.max() > 0.0  # the call itself, not only padding, reached the spectrogram

    # Cropped to 0.5 s the call fills the window: its edges test the frames' own padding.
    short = params(clip_seconds=0.5)
    cropped = AudioEncoder(short)(raw)[INPUT_NAME]
    assert cropped.shape == (64, 51) and (cropped[:, [0, -1]] > FLOOR_DB + 20).any()
    reference = to_db(mel(torch.from_numpy(load_waveform(raw, short)))).numpy()
    np.testing.assert_allclose(cropped, reference, atol=2e-3)


def test_real_clip_matches_recorded_librosa_values() -> None:
    log_mel = AudioEncoder(PARAMS)(QUETZAL.read_bytes())[INPUT_NAME]
    np.testing.assert_allclose(log_mel.mean(axis=1)[::8], LIBROSA_BAND_MEANS, atol=2e-3)
    np.testing.assert_allclose(log_mel[::8, 100], LIBROSA_FRAME_100, atol=2e-3)
    assert log_mel.mean() == pytest.approx(LIBROSA_MEAN, abs=2e-3)


def test_filterbank_matches_torchaudio() -> None:
    import torchaudio

    for rate, n_fft, n_mels in [(16000, 512, 64), (22050, 1024, 128)]:
        reference = torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1, 0.0, rate / 2, n_mels, rate, norm="slaney", mel_scale="slaney"
        )
        np.testing.assert_allclose(
            mel_filterbank(rate, n_fft, n_mels), reference.numpy().T, atol=1e-6
        )


def test_resamples_to_the_target_rate() -> None:
    rate, seconds = 44100, 1.0
    t = np.arange(int(rate * seconds)) / rate
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    waveform = load_waveform(encode_bytes(tone, rate, subtype="FLOAT"), params(clip_seconds=1.0))
    assert waveform.shape == (16000,)
    expected = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(16000) / 16000)
    # Away from the edges (the resampler's filter starts on silence) it is the same tone.
    np.testing.assert_allclose(waveform[200:-200], expected[200:-200], atol=2e-3)

    real = load_waveform(QUETZAL.read_bytes(), params(clip_seconds=1.0))
    samples, source_rate = sf.read(QUETZAL, dtype="float32")
    assert source_rate == 44100 and real.shape == (16000,)
    # The whole real clip (0.93 s) fits in the 1 s window: its energy per second is kept.
    assert float(np.sum(real**2) / 16000) == pytest.approx(
        float(np.sum(samples**2) / 44100), rel=0.02
    )


def test_long_clip_is_centre_cropped_short_clip_centre_padded() -> None:
    raw = QUETZAL.read_bytes()
    full, rate = sf.read(io.BytesIO(raw), dtype="float32")
    same_rate = params(sample_rate=rate)

    cropped = load_waveform(raw, {**same_rate, "clip_seconds": 0.5})
    start = (len(full) - 22050) // 2
    np.testing.assert_array_equal(cropped, full[start : start + 22050])

    padded = load_waveform(raw, {**same_rate, "clip_seconds": 2.0})
    left = (88200 - len(full)) // 2
    assert padded.shape == (88200,)
    np.testing.assert_array_equal(padded[left : left + len(full)], full)
    assert not padded[:left].any() and not padded[left + len(full) :].any()


def test_stereo_is_mixed_to_mono() -> None:
    raw = STEREO.read_bytes()
    stereo, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    assert stereo.shape[1] == 2 and not np.allclose(stereo[:, 0], stereo[:, 1])
    mono = load_waveform(raw, params(sample_rate=rate, clip_seconds=2.0))
    left = (2 * rate - len(stereo)) // 2
    np.testing.assert_allclose(mono[left : left + len(stereo)], stereo.mean(axis=1), atol=1e-7)

    # Opposite channels cancel: the mono mix is silence.
    tone = load_waveform(QUETZAL.read_bytes(), params(sample_rate=44100))
    cancelled = encode_bytes(np.stack([tone, -tone], axis=1), 44100, subtype="FLOAT")
    assert (AudioEncoder(PARAMS)(cancelled)[INPUT_NAME] == FLOOR_DB).all()


def test_silence_gives_the_finite_floor() -> None:
    silence = encode_bytes(np.zeros(8000, dtype=np.int16), 8000)
    log_mel = AudioEncoder(PARAMS)(silence)[INPUT_NAME]
    assert log_mel.shape == (64, 201)
    assert np.isfinite(log_mel).all() and (log_mel == FLOOR_DB).all()
    assert FLOOR_DB == -100.0


def test_wav_flac_and_mp3_of_the_same_clip_agree() -> None:
    samples, rate = sf.read(QUETZAL, dtype="float32")
    encoder = AudioEncoder(PARAMS)
    wav = encoder(encode_bytes(samples, rate, "WAV", "PCM_24"))[INPUT_NAME]
    flac = encoder(encode_bytes(samples, rate, "FLAC", "PCM_24"))[INPUT_NAME]
    mp3 = encoder(encode_bytes(samples, rate, "MP3", "MPEG_LAYER_III"))[INPUT_NAME]
    # Both lossless; libsndfile scales 24-bit FLAC and WAV to float a hair differently.
    np.testing.assert_allclose(flac, wav, atol=1e-3)
    loud = wav > wav.max() - 40  # lossy mp3: compare where the call is, not near the floor
    assert np.abs(mp3[loud] - wav[loud]).mean() < 1.5


def test_bad_bytes_are_input_errors_with_the_right_status() -> None:
    encoder = AudioEncoder(PARAMS)
    real = QUETZAL.read_bytes()
    kick = KICK.read_bytes()
    nan_wav = encode_bytes(np.array([0.1, np.nan, 0.2], dtype=np.float32), 16000, subtype="FLOAT")
    cases = {
        "empty": (b"", 422, "empty"),
        "random bytes": (np.random.default_rng(0).bytes(4096), 415, "not audio"),
        "text": (b"shopping list: eggs, milk\n" * 20, 415, "not audio"),
        "half an ogg": (real[: len(real) // 2], 422, "no audio"),
        "a tenth of an ogg": (real[: len(real) // 10], 422, "corrupt or truncated"),
        "half a flac": (kick[: len(kick) // 2], 422, "corrupt or truncated"),
        "zero-length wav": (encode_bytes(np.zeros(0, dtype=np.int16), 16000), 422, "no audio"),
        "NaN samples": (nan_wav, 422, "NaN"),
        # The probe's file: float samples of 1e30 overflow the power spectrum to infinity.
        "samples of 1e30": (
            encode_bytes(np.full(16000, 1e30, dtype=np.float32), 16000, subtype="FLOAT"),
            422,
            "over 1000 times full scale",
        ),
    }
    for name, (data, status, fragment) in cases.items():
        with pytest.raises(InputError) as caught:
            encoder(data)
        assert caught.value.status_code == status, name
        assert fragment in str(caught.value), (name, str(caught.value))
        assert "BytesIO" not in str(caught.value)


def test_over_long_recordings_are_refused_from_the_header_and_long_ones_cropped() -> None:
    rate = 1000  # a low rate keeps these minutes of silence small and quick to write
    encoder = AudioEncoder(PARAMS)
    at_limit = encode_bytes(np.zeros(int(MAX_SECONDS * rate), np.int16), rate, "FLAC")
    assert encoder(at_limit)[INPUT_NAME].shape == (64, 201)
    over = encode_bytes(np.zeros(int(MAX_SECONDS * rate) + 30 * rate, np.int16), rate, "FLAC")
    with pytest.raises(InputError, match="exceeds the limit of 600 s") as caught:
        encoder(over)
    assert caught.value.status_code == 413


def test_spec_augment_masks_bands_with_the_mean_and_keeps_the_input() -> None:
    log_mel = AudioEncoder(PARAMS)(QUETZAL.read_bytes())[INPUT_NAME]
    original = log_mel.copy()
    augmented = spec_augment({INPUT_NAME: log_mel}, np.random.default_rng(3))[INPUT_NAME]
    np.testing.assert_array_equal(log_mel, original)
    assert augmented.shape == log_mel.shape
    changed = augmented != log_mel
    assert changed.any()
    assert np.allclose(augmented[changed], log_mel.mean())
    again = spec_augment({INPUT_NAME: log_mel}, np.random.default_rng(3))[INPUT_NAME]
    np.testing.assert_array_equal(again, augmented)


def test_encoder_imports_neither_torch_nor_librosa() -> None:
    """The server runs this module: no torch, and no librosa/numba (seconds of JIT at start)."""
    code = (
        "import sys; from mlfactory.modalities import get_modality; "
        f"e = get_modality('audio').encoder({PARAMS!r}); "
        f"e(open({str(QUETZAL)!r}, 'rb').read()); "
        "heavy = sorted({'torch', 'librosa', 'numba'} & set(sys.modules)); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_invalid_parameters_are_refused() -> None:
    audio = get_modality("audio")
    with pytest.raises(ConfigError, match=r"preprocess.n_mels: 0 is not allowed: use >= 1"):
        audio.preprocessing(params(n_mels=0))
    with pytest.raises(ConfigError, match=r"preprocess.clip_seconds: 0.0 is not allowed: use > 0"):
        audio.preprocessing(params(clip_seconds=0.0))
    with pytest.raises(
        ConfigError, match=r"preprocess.n_mels: 300 bands need .* n_fft 512 gives 257"
    ):
        audio.preprocessing(params(n_mels=300))
