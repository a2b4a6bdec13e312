"""Spectral losses of a generated waveform against the real one (vocoder fine-tuning).

- `MelLoss`: L1 between log-mels, on the feature store's own mel convention (the HiFi-GAN
  `MelSpectrogram` of `voxtrain.audio`, which is differentiable), so the generator is trained
  on exactly what it is later asked to render.
- `MultiResolutionSTFTLoss`: spectral convergence plus L1 log magnitude at several STFT
  sizes (Yamamoto et al. 2020, Parallel WaveGAN). One resolution alone lets the generator
  trade time for frequency detail; several pin both down.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from voxtrain.audio import MelSpectrogram
from voxtrain.config import AudioConfig

# Inside the square root: keeps the gradient of |X| finite where a bin is exactly zero.
_POWER_EPS = 1e-9
# Floor of the log magnitude: digital silence would otherwise give -inf.
_LOG_FLOOR = 1e-7


def _waveform(wav: Tensor) -> Tensor:
    """(B, 1, N) generator output or (B, N) waveform -> (B, N) float32."""
    if wav.dim() == 3 and wav.shape[1] == 1:
        wav = wav.squeeze(1)
    if wav.dim() != 2:
        raise ValueError(f"expected a (B, N) or (B, 1, N) waveform, got shape {tuple(wav.shape)}")
    return wav.float()


class MelLoss(nn.Module):
    """Mean absolute difference of the log-mels of two waveforms of the same length."""

    def __init__(self, audio: AudioConfig) -> None:
        super().__init__()
        self.mel = MelSpectrogram(audio)

    def forward(self, generated: Tensor, real: Tensor) -> Tensor:
        return torch.mean(torch.abs(self.mel(_waveform(generated)) - self.mel(_waveform(real))))


def stft_magnitude(wav: Tensor, n_fft: int, hop: int, window: Tensor) -> Tensor:
    """|STFT| (B, n_fft // 2 + 1, frames) of a (B, N) waveform, centred frames, Hann window."""
    spec = torch.stft(wav, n_fft, hop_length=hop, win_length=window.shape[0], window=window,
                      center=True, pad_mode="reflect", return_complex=True)
    return torch.view_as_real(spec).pow(2).sum(-1).add(_POWER_EPS).sqrt()


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over resolutions of spectral convergence + L1 log-magnitude distance.

    Returns (spectral convergence, log magnitude), each averaged over the resolutions; the
    caller weighs and sums them. Every waveform must be longer than half the largest n_fft
    (reflect padding)."""

    def __init__(self, resolutions: Sequence[tuple[int, int, int]]) -> None:
        super().__init__()
        self.resolutions = [(int(n), int(h), int(w)) for n, h, w in resolutions]
        for i, (_, _, win) in enumerate(self.resolutions):
            # Derived from the resolutions: not part of any checkpoint.
            self.register_buffer(f"window_{i}", torch.hann_window(win), persistent=False)

    def min_samples(self) -> int:
        return max((n // 2 + 1 for n, _, _ in self.resolutions), default=0)

    def forward(self, generated: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
        generated, real = _waveform(generated), _waveform(real)
        if not self.resolutions:
            zero = generated.new_zeros(())
            return zero, zero
        sc_sum, mag_sum = generated.new_zeros(()), generated.new_zeros(())
        for i, (n_fft, hop, _) in enumerate(self.resolutions):
            window = getattr(self, f"window_{i}")
            gen = stft_magnitude(generated, n_fft, hop, window)
            ref = stft_magnitude(real, n_fft, hop, window)
            sc_sum = sc_sum + torch.linalg.norm(ref - gen) / torch.linalg.norm(ref).clamp_min(_LOG_FLOOR)
            mag_sum = mag_sum + torch.mean(torch.abs(
                torch.log(ref.clamp_min(_LOG_FLOOR)) - torch.log(gen.clamp_min(_LOG_FLOOR))))
        n = len(self.resolutions)
        return sc_sum / n, mag_sum / n
