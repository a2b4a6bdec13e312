"""Frame-level features: log-mel (HiFi-GAN convention), energy and pitch.

The mel must match what the pretrained HiFi-GAN vocoder was trained on bit for bit in
convention (padding, window, magnitude epsilon, Slaney filters, log clamp), otherwise
the vocoder renders our predictions with audible artefacts. Every feature shares the
same frame grid: T = (N + 2*pad - n_fft) // hop + 1 with pad = (n_fft - hop) // 2.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyworld
import torch
import torch.nn.functional as F
from torch import nn

from voxtrain.audio.io import AudioError
from voxtrain.config import AudioConfig

# HiFi-GAN's constants: the epsilon inside the magnitude keeps sqrt differentiable at 0,
# the clamp floors the log at about -11.5 for silence.
MAGNITUDE_EPS = 1e-9
LOG_CLAMP = 1e-5

# Slaney mel scale: linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


def mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular Slaney-scale filters with Slaney area normalisation,
    shape (n_mels, n_fft // 2 + 1), float32 (computed in float64). An odd n_fft (DNSMOS P.808's
    321) has no bin at sample_rate / 2: the bins are k * sample_rate / n_fft."""
    fft_freqs = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    # Distance of every FFT bin from every filter edge; each triangle rises from
    # edges[i] to edges[i+1] and falls to edges[i+2].
    dist = edges[:, None] - fft_freqs[None, :]
    rising = -dist[:-2] / widths[:-1, None]
    falling = dist[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    # Area normalisation: each filter integrates to the same energy regardless of width.
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def num_frames(num_samples: int, cfg: AudioConfig) -> int:
    """Frames the HiFi-GAN STFT produces for `num_samples` samples."""
    pad = (cfg.n_fft - cfg.hop_length) // 2
    return (num_samples + 2 * pad - cfg.n_fft) // cfg.hop_length + 1


class MelSpectrogram(nn.Module):
    """(B, N) waveform in [-1, 1] -> (B, n_mels, T) natural-log mel, HiFi-GAN convention.

    A (B, 1, N) input (a generator's output) is accepted too. Computation is float32
    whatever the input dtype, because the vocoder was trained on float32 mels.
    """

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.n_fft = cfg.n_fft
        self.hop_length = cfg.hop_length
        self.win_length = cfg.win_length
        self.pad = (cfg.n_fft - cfg.hop_length) // 2
        basis = mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
        # Non-persistent: derived from the config, so they must not pin checkpoints to it.
        self.register_buffer("basis", torch.from_numpy(basis), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        """Linear STFT magnitude (B, n_fft // 2 + 1, T) on the mel frame grid."""
        if wav.dim() == 3 and wav.shape[1] == 1:
            wav = wav.squeeze(1)
        if wav.dim() != 2:
            raise ValueError(f"expected a (B, N) waveform, got shape {tuple(wav.shape)}")
        if wav.shape[-1] <= self.pad:
            raise ValueError(
                f"waveform of {wav.shape[-1]} samples is too short for the STFT (needs > {self.pad})"
            )
        x = F.pad(wav.float().unsqueeze(1), (self.pad, self.pad), mode="reflect").squeeze(1)
        spec = torch.stft(
            x,
            self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.float(),
            center=False,
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        return torch.view_as_real(spec).pow(2).sum(-1).add(MAGNITUDE_EPS).sqrt()

    def mel_from_magnitude(self, mag: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.clamp(torch.matmul(self.basis.float(), mag), min=LOG_CLAMP))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        # Under a bf16/fp16 autocast the filterbank matmul would lose the precision the
        # log needs near the clamp; the mel is a target, so it is always float32.
        with torch.autocast(device_type=wav.device.type, enabled=False):
            return self.mel_from_magnitude(self.magnitude(wav))


@lru_cache(maxsize=8)
def _cached_module(key: tuple) -> MelSpectrogram:
    sample_rate, n_fft, win_length, hop_length, n_mels, fmin, fmax = key
    cfg = AudioConfig(
        sample_rate=sample_rate,
        n_fft=n_fft,
        win_length=win_length,
        hop_length=hop_length,
        n_mels=n_mels,
        fmin=fmin,
        fmax=fmax,
    )
    return MelSpectrogram(cfg).eval()


def _module_for(cfg: AudioConfig) -> MelSpectrogram:
    # Building the filterbank costs more than a short clip's STFT, so prepare workers
    # reuse one module per STFT setting (the config object itself is not hashable).
    key = (cfg.sample_rate, cfg.n_fft, cfg.win_length, cfg.hop_length, cfg.n_mels, cfg.fmin, cfg.fmax)
    return _cached_module(key)


def _check_wav(wav: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected a mono waveform (N,), got shape {wav.shape}")
    pad = (cfg.n_fft - cfg.hop_length) // 2
    if len(wav) <= pad:
        raise AudioError("empty_audio", f"{len(wav)} samples is too short for one STFT frame (needs > {pad})")
    return wav


def _magnitude(wav: np.ndarray, cfg: AudioConfig) -> tuple[MelSpectrogram, torch.Tensor]:
    module = _module_for(cfg)
    with torch.inference_mode():
        mag = module.magnitude(torch.from_numpy(wav)[None])
    return module, mag


def mel_spectrogram(wav: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Log-mel of a mono waveform, (T, n_mels) float32."""
    module, mag = _magnitude(_check_wav(wav, cfg), cfg)
    with torch.inference_mode():
        mel = module.mel_from_magnitude(mag)
    return mel[0].T.contiguous().numpy()


def frame_energy(wav: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """L2 norm over frequency of the linear STFT magnitude, (T,) float32 (FastSpeech2)."""
    _, mag = _magnitude(_check_wav(wav, cfg), cfg)
    return torch.linalg.vector_norm(mag[0], dim=0).numpy()


def interpolate_unvoiced(f0: np.ndarray) -> np.ndarray:
    """Fill unvoiced (<= 0) frames linearly between voiced neighbours; the edges hold the
    nearest voiced value. All-unvoiced input gives zeros."""
    f0 = np.asarray(f0, dtype=np.float64)
    voiced = np.flatnonzero(f0 > 0)
    if len(voiced) == 0:
        return np.zeros(len(f0), dtype=np.float32)
    filled = np.interp(np.arange(len(f0)), voiced, f0[voiced])
    return filled.astype(np.float32)


def pitch_track(wav: np.ndarray, cfg: AudioConfig, n_frames: int | None = None) -> np.ndarray:
    """F0 in Hz per mel frame, (T,) float32, unvoiced frames interpolated.

    WORLD's DIO gives a coarse track that StoneMask refines; both run on float64 at a
    frame period of one hop so the track lands on the mel grid (cut or edge padded to T).
    """
    wav = _check_wav(wav, cfg)
    if n_frames is None:
        n_frames = num_frames(len(wav), cfg)
    x = wav.astype(np.float64)
    period_ms = cfg.hop_length / cfg.sample_rate * 1000.0
    # speed=3 decimates DIO's internal signal, so it runs faster; against speed=1 on 80 clips
    # the median F0 difference was 0.0 cents (95th pct 0.1) and voicing differed on 0.5% of frames.
    f0, times = pyworld.dio(
        x, cfg.sample_rate, f0_floor=cfg.pitch_floor, f0_ceil=cfg.pitch_ceil, frame_period=period_ms, speed=3
    )
    f0 = pyworld.stonemask(x, f0, times, cfg.sample_rate)
    if len(f0) >= n_frames:
        f0 = f0[:n_frames]
    else:
        f0 = np.pad(f0, (0, n_frames - len(f0)), mode="edge")
    return interpolate_unvoiced(f0)


def extract_features(wav: np.ndarray, cfg: AudioConfig) -> dict[str, np.ndarray]:
    """mel (T, n_mels), pitch (T,) Hz and energy (T,), all float32 on one frame grid.

    The STFT is computed once and shared by mel and energy. Thread count is left to the
    caller (prepare workers set torch.set_num_threads(1)).
    """
    wav = _check_wav(wav, cfg)
    module, mag = _magnitude(wav, cfg)
    with torch.inference_mode():
        mel = module.mel_from_magnitude(mag)[0].T.contiguous().numpy()
        energy = torch.linalg.vector_norm(mag[0], dim=0).numpy()
    pitch = pitch_track(wav, cfg, n_frames=mel.shape[0])
    return {"mel": mel, "pitch": pitch, "energy": energy}
