"""Audio front end against independent references: real files, real libraries, no mocks."""

from __future__ import annotations

import pickle

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from voxtrain.audio import (
    AudioError,
    MelSpectrogram,
    extract_features,
    interpolate_unvoiced,
    is_silent,
    load_audio,
    mel_basis,
    mel_spectrogram,
    num_frames,
    pitch_track,
    trim_silence,
)
from voxtrain.config import AudioConfig

SR = 22050


@pytest.fixture(scope="module")
def cfg() -> AudioConfig:
    return AudioConfig()


def _sine(freq: float, seconds: float, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def test_signal() -> np.ndarray:
    """1 s of a linear 100 Hz -> 8 kHz chirp plus a 440 Hz sine.

    A -40 dB noise floor keeps every (frame, band) far above float32 round-off: without
    it, bands far from both tones sit at ~1e-5 where a float32 STFT's relative error, not
    the formula, decides the log (a few 1e-3 there). The clamp has its own test below.
    """
    t = np.arange(SR) / SR
    chirp = np.sin(2 * np.pi * (100 * t + (8000 - 100) / 2 * t**2))
    noise = 0.01 * np.random.default_rng(0).standard_normal(SR)
    return (0.3 * chirp + 0.3 * np.sin(2 * np.pi * 440 * t) + noise).astype(np.float32)


def _reference_magnitude(wav: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """HiFi-GAN's STFT magnitude written out in numpy (float64), (n_fft // 2 + 1, T)."""
    pad = (cfg.n_fft - cfg.hop_length) // 2
    x = np.pad(wav.astype(np.float64), pad, mode="reflect")
    n = np.arange(cfg.win_length)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / cfg.win_length)  # periodic Hann
    left = (cfg.n_fft - cfg.win_length) // 2
    window = np.pad(window, (left, cfg.n_fft - cfg.win_length - left))
    n_frames = (len(x) - cfg.n_fft) // cfg.hop_length + 1
    idx = np.arange(cfg.n_fft)[None, :] + cfg.hop_length * np.arange(n_frames)[:, None]
    spec = np.fft.rfft(x[idx] * window, axis=1)
    return np.sqrt(spec.real**2 + spec.imag**2 + 1e-9).T


def _reference_mel(mag: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    basis = librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax
    ).astype(np.float64)
    return np.log(np.maximum(basis @ mag, 1e-5))  # (n_mels, T)


# ---------------------------------------------------------------- features


def test_mel_basis_equals_librosa(cfg: AudioConfig) -> None:
    for sr, n_fft, n_mels, fmin, fmax in [(SR, 1024, 80, 0.0, 8000.0), (16000, 512, 64, 55.0, 7600.0)]:
        ours = mel_basis(sr, n_fft, n_mels, fmin, fmax)
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        assert ours.shape == ref.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)


def test_mel_matches_hifigan_formula(cfg: AudioConfig, test_signal: np.ndarray) -> None:
    ref = _reference_mel(_reference_magnitude(test_signal, cfg), cfg).T
    mel = mel_spectrogram(test_signal, cfg)
    assert mel.dtype == np.float32 and mel.shape == ref.shape == (num_frames(SR, cfg), cfg.n_mels)
    np.testing.assert_allclose(mel, ref, rtol=0, atol=1e-4)


def test_silence_hits_the_log_clamp(cfg: AudioConfig) -> None:
    mel = mel_spectrogram(np.zeros(SR // 2, dtype=np.float32), cfg)
    np.testing.assert_allclose(mel, np.log(1e-5), rtol=0, atol=1e-6)


def test_module_batches_and_keeps_config_out_of_state_dict(cfg: AudioConfig, test_signal) -> None:
    module = MelSpectrogram(cfg)
    batch = torch.from_numpy(np.stack([test_signal, 0.5 * test_signal]))
    out = module(batch)
    assert out.shape == (2, cfg.n_mels, num_frames(SR, cfg))
    np.testing.assert_allclose(out[0].T.numpy(), mel_spectrogram(test_signal, cfg), atol=1e-5)
    # A generator's (B, 1, N) output is accepted as-is.
    assert torch.equal(module(batch[:, None]), out)
    assert len(module.state_dict()) == 0


@pytest.mark.parametrize("n_samples", [400, 1000, SR, SR + 1, 256 * 100, 256 * 100 - 1])
def test_frame_count(cfg: AudioConfig, n_samples: int) -> None:
    pad = (cfg.n_fft - cfg.hop_length) // 2
    expected = (n_samples + 2 * pad - cfg.n_fft) // cfg.hop_length + 1
    wav = np.random.default_rng(0).uniform(-0.5, 0.5, n_samples).astype(np.float32)
    assert num_frames(n_samples, cfg) == expected
    assert mel_spectrogram(wav, cfg).shape == (expected, cfg.n_mels)


def test_extract_features_shapes_and_energy(cfg: AudioConfig, test_signal: np.ndarray) -> None:
    feats = extract_features(test_signal, cfg)
    n = num_frames(len(test_signal), cfg)
    assert feats["mel"].shape == (n, cfg.n_mels)
    assert feats["pitch"].shape == feats["energy"].shape == (n,)
    assert all(v.dtype == np.float32 for v in feats.values())
    np.testing.assert_allclose(feats["mel"], mel_spectrogram(test_signal, cfg), atol=1e-6)
    ref_energy = np.linalg.norm(_reference_magnitude(test_signal, cfg), axis=0)
    np.testing.assert_allclose(feats["energy"], ref_energy, rtol=1e-4)


def test_pitch_of_a_sine(cfg: AudioConfig) -> None:
    f0 = pitch_track(_sine(440.0, 1.0), cfg)
    assert f0.shape == (num_frames(SR, cfg),)
    assert np.all(f0 > 0)
    assert abs(float(np.median(f0)) - 440.0) < 4.0


def test_pitch_unvoiced_handling(cfg: AudioConfig) -> None:
    filled = interpolate_unvoiced(np.array([0, 100, 0, 0, 160, 0, 0], dtype=np.float64))
    np.testing.assert_allclose(filled, [100, 100, 120, 140, 160, 160, 160])
    assert not interpolate_unvoiced(np.zeros(5)).any()
    assert not pitch_track(np.zeros(SR // 2, dtype=np.float32), cfg).any()


def test_too_short_for_a_frame_is_rejected(cfg: AudioConfig) -> None:
    with pytest.raises(AudioError) as err:
        extract_features(np.zeros(100, dtype=np.float32), cfg)
    assert err.value.reason == "empty_audio"


# ---------------------------------------------------------------- loading


def test_48k_stereo_loads_as_22k_mono(tmp_path) -> None:
    left, right = _sine(440.0, 2.0, sr=48000, amp=0.6), _sine(440.0, 2.0, sr=48000, amp=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 48000, subtype="PCM_24")
    wav = load_audio(path, SR)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert len(wav) == 2 * SR
    # Mean of the channels: a 0.4 amplitude sine, RMS 0.4/sqrt(2) away from the edges.
    rms = float(np.sqrt(np.mean(wav[1000:-1000] ** 2)))
    assert abs(rms - 0.4 / np.sqrt(2)) < 2e-3


def test_same_rate_flac_is_read_unchanged(tmp_path) -> None:
    pcm = (_sine(220.0, 0.5) * 32767).astype(np.int16)
    path = tmp_path / "clip.flac"
    sf.write(path, pcm, SR, subtype="PCM_16")
    np.testing.assert_array_equal(load_audio(path, SR), pcm.astype(np.float32) / 32768.0)


def _reason(path, sample_rate: int = SR) -> AudioError:
    with pytest.raises(AudioError) as err:
        load_audio(path, sample_rate)
    return err.value


def test_truncated_wav_is_unreadable(tmp_path) -> None:
    full = tmp_path / "full.wav"
    sf.write(full, _sine(300.0, 1.0), SR, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:20000])
    err = _reason(cut)
    assert err.reason == "unreadable_audio" and "truncated" in err.detail


def test_truncated_flac_is_unreadable(tmp_path) -> None:
    full = tmp_path / "full.flac"
    sf.write(full, _sine(300.0, 1.0), SR, subtype="PCM_16")
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert _reason(cut).reason == "unreadable_audio"


def test_non_audio_and_missing_files_are_unreadable(tmp_path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    assert _reason(text).reason == "unreadable_audio"
    assert _reason(tmp_path / "missing.wav").reason == "unreadable_audio"


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_float_wav(tmp_path, bad: float) -> None:
    wav = _sine(300.0, 0.5)
    wav[1234] = bad
    path = tmp_path / "nan.wav"
    sf.write(path, wav, 44100, subtype="FLOAT")  # other rate: must fail before resampling
    assert _reason(path).reason == "nonfinite_samples"


def test_empty_wav(tmp_path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), SR)
    assert _reason(path).reason == "empty_audio"


def test_audio_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(AudioError("empty_audio", "no samples")))
    assert (err.reason, err.detail) == ("empty_audio", "no samples")


# ---------------------------------------------------------------- trimming


def test_trim_removes_leading_and_trailing_silence(cfg: AudioConfig) -> None:
    rng = np.random.default_rng(1)
    tone = _sine(440.0, 1.0)
    silence = (1e-4 * rng.standard_normal(SR // 2)).astype(np.float32)  # -74 dB: below the cut
    padded = np.concatenate([silence, tone, silence])
    trimmed = trim_silence(padded, cfg)
    # Frames are 1024 long and centred on their hop, so a sharp onset is caught up to half
    # a frame plus a hop early; the kept pad comes on top, on each side.
    slack = 2 * (512 + 256 + int(0.02 * SR))
    assert len(tone) <= len(trimmed) <= len(tone) + slack
    # The tone itself is kept whole.
    start = int(np.flatnonzero(np.isin(trimmed, tone[:64]))[0])
    np.testing.assert_array_equal(trimmed[start : start + len(tone)], tone)


def test_trim_all_silent_is_empty(cfg: AudioConfig) -> None:
    assert trim_silence(np.zeros(SR, dtype=np.float32), cfg).size == 0
    assert is_silent(np.zeros(SR, dtype=np.float32))
    assert not is_silent(_sine(440.0, 0.1))
