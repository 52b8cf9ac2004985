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
from mlfactory.modalities.log_mel import AMIN, FLOOR_DB, mel_filterbank

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
# A float32 STFT errs by about eps * log2(n_fft) (1e-6) of its frame's power, whatever a band's
# own power (measured against torchaudio: 8e-7). Log-mels are compared as powers, within 10x that
# of the frame's total, so a band far below its frame's loudest may differ by many ulps in dB.
# At the AMIN floor both are the floor.
FRAME_POWER_RTOL = 1e-5
# numpy documents float32 log10 to 4 ulp (its umath validation data); x10, plus that rounding.
FLOOR_ATOL = 10 * 4 * float(np.spacing(np.float32(10.0))) + float(np.spacing(np.float32(100.0)))


def encode_bytes(
    samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None
) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def params(**changes: float) -> dict[str, float]:
    return {**PARAMS, **changes}


def assert_log_mels_agree(ours: np.ndarray, reference: np.ndarray) -> None:
    """Same spectrogram: each band's power within FRAME_POWER_RTOL of its frame's total, or AMIN."""
    power, expected = 10.0 ** (ours / 10.0), 10.0 ** (reference.astype(np.float64) / 10.0)
    allowed = FRAME_POWER_RTOL * expected.sum(axis=0, keepdims=True) + AMIN
    excess = np.abs(power - expected) / allowed
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess.max() <= 1.0, f"{excess.max():.2f}x the tolerance at (band, frame) {worst}"


@pytest.mark.numerics
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
    assert_log_mels_agree(log_mel, reference)
    assert log_mel.max() > 0.0  # the call itself, not only padding, reached the spectrogram

    # Cropped to 0.5 s the call fills the window: its edges test the frames' own padding.
    short = params(clip_seconds=0.5)
    cropped = AudioEncoder(short)(raw)[INPUT_NAME]
    assert cropped.shape == (64, 51) and (cropped[:, [0, -1]] > FLOOR_DB + 20).any()
    reference = to_db(mel(torch.from_numpy(load_waveform(raw, short)))).numpy()
    assert_log_mels_agree(cropped, reference)


@pytest.mark.numerics
def test_real_clip_matches_recorded_librosa_values() -> None:
    log_mel = AudioEncoder(PARAMS)(QUETZAL.read_bytes())[INPUT_NAME]
    # Recorded to 1e-3 dB: +-5e-4 of rounding, plus 1e-4 for float32 differences between
    # librosa and this code (measured: 4e-6 dB on these values, 0 on the means).
    atol = 5e-4 + 1e-4
    np.testing.assert_allclose(log_mel.mean(axis=1)[::8], LIBROSA_BAND_MEANS, rtol=0, atol=atol)
    np.testing.assert_allclose(log_mel[::8, 100], LIBROSA_FRAME_100, rtol=0, atol=atol)
    assert log_mel.mean() == pytest.approx(LIBROSA_MEAN, rel=0, abs=atol)


@pytest.mark.numerics
def test_filterbank_matches_torchaudio() -> None:
    import torchaudio

    for rate, n_fft, n_mels in [(16000, 512, 64), (22050, 1024, 128)]:
        reference = torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1, 0.0, rate / 2, n_mels, rate, norm="slaney", mel_scale="slaney"
        )
        expected = reference.numpy().T
        # torchaudio builds the filters in float32: frequencies up to Nyquist (~1e4 Hz) carry
        # ~1e-3 Hz of rounding against filter slopes >= ~25 Hz wide, ~1e-4 of a filter's peak.
        allowed = 1e-4 * expected.max(axis=1, keepdims=True)
        assert (np.abs(mel_filterbank(rate, n_fft, n_mels) - expected) <= allowed).all()


@pytest.mark.numerics
def test_resamples_to_the_target_rate() -> None:
    rate, seconds = 44100, 1.0
    t = np.arange(int(rate * seconds)) / rate
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    waveform = load_waveform(encode_bytes(tone, rate, subtype="FLOAT"), params(clip_seconds=1.0))
    assert waveform.shape == (16000,)
    expected = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(16000) / 16000)
    # Away from the edges (the resampler's filter starts on silence) it is the same tone, to
    # soxr's "HQ" precision: 20 bits of full scale.
    np.testing.assert_allclose(waveform[200:-200], expected[200:-200], rtol=0, atol=2.0**-20)

    real = load_waveform(QUETZAL.read_bytes(), params(clip_seconds=1.0))
    samples, source_rate = sf.read(QUETZAL, dtype="float32")
    assert source_rate == 44100 and real.shape == (16000,)
    # The whole real clip (0.93 s) fits in the 1 s window: its energy per second is kept below
    # the new Nyquist (8 kHz). soxr's HQ passband ends at ~95 % of it: at most the clip's energy
    # above 7.2 kHz (90 %) is lost; 1e-5 more for soxr's 20-bit precision and float32 sums.
    kept = float(np.sum(real.astype(np.float64) ** 2) / 16000)
    source = float(np.sum(samples.astype(np.float64) ** 2) / 44100)
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    above = spectrum[np.fft.rfftfreq(len(samples), 1.0 / 44100) > 7200].sum() / spectrum.sum()
    assert source * (1.0 - above - 1e-5) <= kept <= source * (1.0 + 1e-5)


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


@pytest.mark.numerics
def test_stereo_is_mixed_to_mono() -> None:
    raw = STEREO.read_bytes()
    stereo, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    assert stereo.shape[1] == 2 and not np.allclose(stereo[:, 0], stereo[:, 1])
    mono = load_waveform(raw, params(sample_rate=rate, clip_seconds=2.0))
    left = (2 * rate - len(stereo)) // 2
    # Exact: (left + right) / 2 in float32 is one rounding of the sum; halving is exact.
    mix = (stereo[:, 0] + stereo[:, 1]) / np.float32(2.0)
    np.testing.assert_array_equal(mono[left : left + len(stereo)], mix)

    # Opposite channels cancel: the mono mix is silence, exactly, so every band is at the floor.
    tone = load_waveform(QUETZAL.read_bytes(), params(sample_rate=44100))
    cancelled = encode_bytes(np.stack([tone, -tone], axis=1), 44100, subtype="FLOAT")
    assert not load_waveform(cancelled, PARAMS).any()
    np.testing.assert_allclose(
        AudioEncoder(PARAMS)(cancelled)[INPUT_NAME], FLOOR_DB, rtol=0, atol=FLOOR_ATOL
    )


@pytest.mark.numerics
def test_silence_gives_the_finite_floor() -> None:
    silence = encode_bytes(np.zeros(8000, dtype=np.int16), 8000)
    log_mel = AudioEncoder(PARAMS)(silence)[INPUT_NAME]
    assert log_mel.shape == (64, 201)
    # float32 log10 of AMIN: -100 dB to numpy's documented accuracy (-100.00001 with AVX-512).
    assert np.isfinite(log_mel).all()
    np.testing.assert_allclose(log_mel, FLOOR_DB, rtol=0, atol=FLOOR_ATOL)
    assert FLOOR_DB == -100.0  # computed in float64 from AMIN = 1e-10: exact


@pytest.mark.numerics
def test_wav_flac_and_mp3_of_the_same_clip_agree() -> None:
    samples, rate = sf.read(QUETZAL, dtype="float32")
    encoder = AudioEncoder(PARAMS)
    wav_bytes = encode_bytes(samples, rate, "WAV", "PCM_24")
    flac_bytes = encode_bytes(samples, rate, "FLAC", "PCM_24")
    # Both lossless 24-bit: libsndfile's two writers round float to 24 bits a hair differently,
    # so the decoded samples differ by at most one 24-bit step, below the AMIN floor's power.
    wav_samples = sf.read(io.BytesIO(wav_bytes), dtype="float32")[0]
    flac_samples = sf.read(io.BytesIO(flac_bytes), dtype="float32")[0]
    assert np.abs(wav_samples - flac_samples).max() <= 2.0**-23
    wav, flac = encoder(wav_bytes)[INPUT_NAME], encoder(flac_bytes)[INPUT_NAME]
    assert_log_mels_agree(flac, wav)
    mp3 = encoder(encode_bytes(samples, rate, "MP3", "MPEG_LAYER_III"))[INPUT_NAME]
    # Lossy mp3 has no exact bound: its coding noise is shaped to stay under the loud bands.
    # Where the call is (within 40 dB of the peak) it moves them by 0.4 dB on average (measured);
    # a wrong rate, channel mix or window moves them by several dB.
    loud = wav > wav.max() - 40
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


@pytest.mark.numerics
def test_spec_augment_masks_bands_with_the_mean_and_keeps_the_input() -> None:
    log_mel = AudioEncoder(PARAMS)(QUETZAL.read_bytes())[INPUT_NAME]
    original = log_mel.copy()
    augmented = spec_augment({INPUT_NAME: log_mel}, np.random.default_rng(3))[INPUT_NAME]
    np.testing.assert_array_equal(log_mel, original)
    assert augmented.shape == log_mel.shape
    changed = augmented != log_mel
    assert changed.any()
    # Exact: the fill is the float32 mean of the same values, stored as it is.
    assert (augmented[changed] == log_mel.mean()).all()
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


@pytest.mark.parametrize(
    ("rate", "clip_seconds"), [(16000, 2.0), (8000, 0.5), (1000, 1.0), (384000, 3.0)]
)
def test_the_test_input_is_a_wav_note_at_the_bundles_rate(rate: int, clip_seconds: float) -> None:
    """A file as a client uploads it: WAV at the bundle's own rate (nothing to resample),
    audible, not clipped, at most a second long; it passes the data check and encodes."""
    audio = get_modality("audio")
    checked = audio.preprocessing(params(sample_rate=rate, clip_seconds=clip_seconds))
    raw = audio.test_input(checked)
    assert raw == audio.test_input(checked) and audio.check_file(raw) is None
    samples, read_rate = sf.read(io.BytesIO(raw), dtype="float32")
    assert sf.info(io.BytesIO(raw)).format == "WAV" and read_rate == rate
    assert len(samples) == round(min(1.0, clip_seconds) * rate)
    assert 0.1 < np.abs(samples).max() < 1.0 and np.sqrt(np.mean(samples**2)) > 0.01
    (log_mel,) = audio.encoder(checked)(raw).values()
    assert np.isfinite(log_mel).all() and log_mel.max() > FLOOR_DB + 40
