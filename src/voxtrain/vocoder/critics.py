"""Critics (discriminators) for adversarial vocoder training, and their least-squares losses.

Reconstruction losses alone (mel + STFT) lower the mel error while the audio grows buzzy:
they average over the phase and fine structure a listener hears. A critic that tells real
audio from generated audio supplies the missing signal (HiFi-GAN, Kong et al. 2020).

- `SpectralCritic`: a small 2-D convolution stack on the log-magnitude spectrogram at a few
  STFT resolutions. Cheap enough to train on a CPU.
- `PeriodCritic` + `ScaleCritic` = `HifiGanCritic`: the paper's multi-period and multi-scale
  discriminators, for a GPU. A 2-D stack over the waveform folded by a period (2, 3, 5, 7, 11)
  sees periodic structure; 1-D stacks over the waveform at 1x, 2x and 4x average-pooling see
  its structure at several time scales.

Every critic maps a (B, N) waveform to a list of (logits, feature maps), one per sub-critic;
the losses are `voxtrain.adversarial`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from voxtrain.adversarial import CriticOutput
from voxtrain.vocoder.losses import stft_magnitude

_SLOPE = 0.1  # leaky ReLU slope of HiFi-GAN's critics


def _run(layers: nn.ModuleList, head: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    features = []
    for layer in layers:
        x = F.leaky_relu(layer(x), _SLOPE)
        features.append(x)
    x = head(x)
    features.append(x)
    return x.flatten(1), features


class _SpectrogramStack(nn.Module):
    def __init__(self, n_fft: int, hop: int, window: int, channels: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(window), persistent=False)
        # Strided along frequency only: time resolution is what separates a buzz from speech.
        self.layers = nn.ModuleList([weight_norm(nn.Conv2d(1, channels, (3, 9), padding=(1, 4)))] + [
            weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4))) for _ in range(3)])
        self.head = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        magnitude = stft_magnitude(wav.float(), self.n_fft, self.hop, self.window)  # (B, F, T)
        x = torch.log(magnitude.clamp_min(1e-5)).transpose(1, 2).unsqueeze(1)  # (B, 1, T, F)
        return _run(self.layers, self.head, x)


class SpectralCritic(nn.Module):
    """Log-magnitude spectrogram critics at several (n_fft, hop, window) resolutions."""

    def __init__(self, resolutions: Sequence[tuple[int, int, int]], channels: int = 32) -> None:
        super().__init__()
        self.stacks = nn.ModuleList([_SpectrogramStack(n, h, w, channels) for n, h, w in resolutions])

    def forward(self, wav: Tensor) -> CriticOutput:
        return [stack(_flat(wav)) for stack in self.stacks]


class PeriodCritic(nn.Module):
    """One period of HiFi-GAN's multi-period discriminator."""

    def __init__(self, period: int) -> None:
        super().__init__()
        self.period = period
        sizes = [1, 32, 128, 512, 1024]
        self.layers = nn.ModuleList([
            weight_norm(nn.Conv2d(a, b, (5, 1), stride=(3, 1), padding=(2, 0))) for a, b in zip(sizes, sizes[1:])
        ] + [weight_norm(nn.Conv2d(1024, 1024, (5, 1), padding=(2, 0)))])
        self.head = weight_norm(nn.Conv2d(1024, 1, (3, 1), padding=(1, 0)))

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = _flat(wav).unsqueeze(1)
        pad = (-x.shape[-1]) % self.period
        x = F.pad(x, (0, pad), mode="reflect") if pad else x
        x = x.view(x.shape[0], 1, x.shape[-1] // self.period, self.period)
        return _run(self.layers, self.head, x)


class ScaleCritic(nn.Module):
    """One scale of HiFi-GAN's multi-scale discriminator (spectral norm on the first, raw audio)."""

    def __init__(self, spectral: bool) -> None:
        super().__init__()
        norm = spectral_norm if spectral else weight_norm
        spec = [(1, 128, 15, 1, 1), (128, 128, 41, 2, 4), (128, 256, 41, 2, 16), (256, 512, 41, 4, 16),
                (512, 1024, 41, 4, 16), (1024, 1024, 41, 1, 16), (1024, 1024, 5, 1, 1)]
        self.layers = nn.ModuleList([norm(nn.Conv1d(a, b, k, stride=s, groups=g, padding=k // 2))
                                     for a, b, k, s, g in spec])
        self.head = norm(nn.Conv1d(1024, 1, 3, padding=1))

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        return _run(self.layers, self.head, wav.unsqueeze(1))


class HifiGanCritic(nn.Module):
    """HiFi-GAN's multi-period (2, 3, 5, 7, 11) and multi-scale (1x, 2x, 4x) discriminators."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11)) -> None:
        super().__init__()
        self.periods = nn.ModuleList([PeriodCritic(p) for p in periods])
        self.scales = nn.ModuleList([ScaleCritic(spectral=i == 0) for i in range(3)])

    def forward(self, wav: Tensor) -> CriticOutput:
        wav = _flat(wav)
        out = [critic(wav) for critic in self.periods]
        for i, critic in enumerate(self.scales):
            if i:  # each scale halves the rate of the one before (average pooling, as the paper)
                wav = F.avg_pool1d(wav.unsqueeze(1), 4, 2, padding=2).squeeze(1)
            out.append(critic(wav))
        return out


def _flat(wav: Tensor) -> Tensor:
    return wav.squeeze(1) if wav.dim() == 3 else wav


def build_critic(kind: str, resolutions: Sequence[tuple[int, int, int]]) -> nn.Module:
    """`spectral` (CPU-sized) or `hifigan` (the paper's MPD + MSD, GPU-sized)."""
    if kind == "spectral":
        return SpectralCritic(resolutions)
    if kind == "hifigan":
        return HifiGanCritic()
    raise ValueError(f"unknown critic {kind!r}: spectral or hifigan")
