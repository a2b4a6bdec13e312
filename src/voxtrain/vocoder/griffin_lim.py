"""Griffin-Lim phase reconstruction from HiFi-GAN-convention log-mels.

Needs no weights, so it works for any AudioConfig; quality is far below HiFi-GAN (phasey,
metallic) and it exists as a fallback and as a sanity check of mel features.

HiFi-GAN frames are taken from a signal reflect-padded by (n_fft - hop) / 2 with
center=False, so frame t is centred on sample t*hop + hop/2 of the original. Griffin-Lim
runs on the ordinary centred grid (frame t on sample t*hop) because istft handles its edges
cleanly, and the result is then delayed by the difference between the two grids.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from voxtrain.audio.features import mel_basis
from voxtrain.config import AudioConfig

# Floor of HiFi-GAN's log compression: exp(log(1e-5)) is "silence".
_LOG_FLOOR = 1e-5
# Multiplicative NNLS updates refining the pseudo-inverse of the mel basis.
_NNLS_STEPS = 10


def _mel_basis(cfg: AudioConfig) -> Tensor:
    # The same filterbank as the features, so inversion undoes exactly what was applied.
    basis = mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
    return torch.from_numpy(basis).to(torch.float32)


class GriffinLimVocoder:
    """Log-mel (B, n_mels, T) -> waveform (B, T * hop) via mel inversion + fast Griffin-Lim."""

    name = "griffin-lim"

    def __init__(
        self,
        audio: AudioConfig | None = None,
        n_iter: int = 48,
        momentum: float = 0.99,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.audio = audio or AudioConfig()
        self.n_iter = n_iter
        self.momentum = momentum
        self.seed = seed
        self.device = torch.device(device)
        self.mel_basis = _mel_basis(self.audio).to(self.device)
        self.pinv = torch.linalg.pinv(self.mel_basis)
        self.window = torch.hann_window(self.audio.win_length, device=self.device)

    @property
    def sample_rate(self) -> int:
        return self.audio.sample_rate

    @property
    def hop_length(self) -> int:
        return self.audio.hop_length

    def _linear_magnitude(self, log_mel: Tensor) -> Tensor:
        """Non-negative least-squares estimate of the STFT magnitude from mel energies."""
        mel = torch.exp(log_mel)
        basis = self.mel_basis
        spec = torch.clamp(self.pinv @ mel, min=_LOG_FLOOR)
        # Lee-Seung multiplicative updates keep spec >= 0 and monotonically reduce
        # ||basis @ spec - mel||; the clamped pinv alone leaves ringing between bands.
        target = basis.T @ mel
        gram = basis.T @ basis
        for _ in range(_NNLS_STEPS):
            spec = spec * target / (gram @ spec + 1e-10)
        return spec

    def _stft(self, wav: Tensor) -> Tensor:
        a = self.audio
        return torch.stft(
            wav, a.n_fft, a.hop_length, a.win_length, self.window, center=True, return_complex=True
        )

    def _istft(self, spec: Tensor, length: int) -> Tensor:
        a = self.audio
        return torch.istft(spec, a.n_fft, a.hop_length, a.win_length, self.window, center=True, length=length)

    def __call__(self, mel: Tensor) -> Tensor:
        # Phase recovery iterates on small differences: always fp32, whatever the caller's autocast.
        with torch.inference_mode(), torch.autocast(device_type=self.device.type, enabled=False):
            return self._vocode(mel)

    def _vocode(self, mel: Tensor) -> Tensor:
        if mel.dim() == 2:
            mel = mel.unsqueeze(0)
        if mel.dim() != 3 or mel.shape[1] != self.audio.n_mels:
            raise ValueError(f"expected a mel of shape (B, {self.audio.n_mels}, T), got {tuple(mel.shape)}")
        mel = mel.to(self.device, torch.float32)
        batch, _, wanted = mel.shape
        # The centred STFT's reflect padding needs a few frames: pad very short mels with
        # silence and cut the result back to the requested length.
        min_frames = self.audio.n_fft // self.audio.hop_length
        if wanted < min_frames:
            silence = math.log(1e-5)
            mel = torch.nn.functional.pad(mel, (0, min_frames - wanted), value=silence)
        frames = mel.shape[-1]
        hop = self.audio.hop_length
        length = frames * hop
        mag = self._linear_magnitude(mel)
        # A centred STFT of `length` samples has frames + 1 frames; repeat the last target.
        mag = torch.cat([mag, mag[..., -1:]], dim=-1)

        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        phase = torch.rand(mag.shape, generator=gen).to(self.device) * (2 * math.pi)
        angles = torch.polar(torch.ones_like(mag), phase)
        previous = torch.zeros_like(angles)
        accel = self.momentum / (1 + self.momentum)
        for _ in range(self.n_iter):
            rebuilt = self._stft(self._istft(mag * angles, length))
            # Fast Griffin-Lim (Perraudin et al. 2013): extrapolate along the last update.
            angles = rebuilt - accel * previous
            angles = angles / torch.clamp(angles.abs(), min=1e-16)
            previous = rebuilt
        wav = self._istft(mag * angles, length)
        wav = self._shift_to_hifigan_grid(wav)
        return torch.clamp(wav, -1.0, 1.0).reshape(batch, length)[:, : wanted * hop]

    def _shift_to_hifigan_grid(self, wav: Tensor) -> Tensor:
        """Delay the centred-grid signal so its frames line up with HiFi-GAN's, same length."""
        a = self.audio
        offset = a.n_fft // 2 - (a.n_fft - a.hop_length) // 2
        return torch.nn.functional.pad(wav, (offset, 0))[..., : wav.shape[-1]]
