"""A mel-spectrogram critic for the acoustic model (GANSpeech, Interspeech 2021).

Trained on reconstruction losses alone, FastSpeech2 predicts the average of the mels that fit
a text: over-smoothed, and rendered flat and buzzy. A critic that tells real mel windows from
predicted ones pushes the prediction toward the texture of real speech.

It reads fixed windows of `frames` mel frames (cropped from the valid part of each clip, so
padding never reaches it) at one or more time scales: a 2-D convolution stack over
(time, mel band) per scale, each giving logits and its feature maps (for feature matching).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from voxtrain.adversarial import CriticOutput

_SLOPE = 0.2


class _Stack(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([weight_norm(nn.Conv2d(1, channels, 3, padding=1))] + [
            weight_norm(nn.Conv2d(channels, channels, 3, stride=(1, 2), padding=1)) for _ in range(3)])
        self.head = weight_norm(nn.Conv2d(channels, 1, 3, padding=1))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), _SLOPE)
            features.append(x)
        x = self.head(x)
        features.append(x)
        return x.flatten(1), features


class MelCritic(nn.Module):
    """(B, frames, n_mels) log-mel windows -> one (logits, features) per time scale."""

    def __init__(self, channels: int = 32, scales: Sequence[int] = (1, 2)) -> None:
        super().__init__()
        self.scales = tuple(scales)
        self.stacks = nn.ModuleList([_Stack(channels) for _ in self.scales])

    def forward(self, mels: Tensor) -> CriticOutput:
        x = mels.float().unsqueeze(1)  # (B, 1, T, M)
        out = []
        for scale, stack in zip(self.scales, self.stacks, strict=True):
            pooled = x if scale == 1 else F.avg_pool2d(x, (scale, 1))
            out.append(stack(pooled))
        return out


def window_starts(lengths: Tensor, frames: int, seed: int) -> list[int]:
    """Where each clip's window starts, inside its valid frames. Drawn from a generator seeded
    by `seed` (never from the global RNG, so a critic costs a resume nothing)."""
    generator = torch.Generator().manual_seed(seed)
    return [int(torch.randint(0, max(n - frames, 0) + 1, (1,), generator=generator)) for n in lengths.tolist()]


def mel_windows(mels: Tensor, lengths: Tensor, starts: list[int], frames: int) -> Tensor:
    """(B, frames, M) windows of (B, T, M) mels from `starts`; a clip shorter than `frames` is
    taken whole and padded with its last frame, so padding never reaches the critic."""
    windows = []
    for mel, length, start in zip(mels, lengths.tolist(), starts, strict=True):
        window = mel[start : start + min(frames, length)]
        if len(window) < frames:
            window = torch.cat([window, window[-1:].expand(frames - len(window), -1)])
        windows.append(window)
    return torch.stack(windows)
