"""Adversarial training's shared pieces: the least-squares GAN losses (Mao et al. 2017, as
HiFi-GAN and GANSpeech use them) with feature matching, and the warm-up ramp.

A critic maps its input to a list of (logits, feature maps), one per sub-critic: the vocoder's
critics read waveforms (`voxtrain.vocoder.critics`), the acoustic model's reads mels
(`voxtrain.model.critic`). The losses do not care which.
"""

from __future__ import annotations

import torch
from torch import Tensor

CriticOutput = list[tuple[Tensor, list[Tensor]]]


def critic_loss(real: CriticOutput, fake: CriticOutput) -> Tensor:
    """Least squares: real logits toward 1, generated toward 0, summed over sub-critics."""
    return sum(torch.mean((r - 1) ** 2) + torch.mean(f ** 2) for (r, _), (f, _) in zip(real, fake, strict=True))


def generator_losses(real: CriticOutput, fake: CriticOutput) -> tuple[Tensor, Tensor]:
    """(adversarial, feature matching) for the generator: its logits toward 1, and its feature
    maps toward the real input's (which carry no gradient)."""
    adversarial = sum(torch.mean((f - 1) ** 2) for f, _ in fake)
    matching = sum(torch.mean(torch.abs(rf.detach() - ff))
                   for (_, real_maps), (_, fake_maps) in zip(real, fake, strict=True)
                   for rf, ff in zip(real_maps, fake_maps, strict=True))
    return adversarial, matching


def halves(output: CriticOutput, n: int) -> tuple[CriticOutput, CriticOutput]:
    """A critic's output on [real; fake] (one forward: a DDP-wrapped critic allows one per
    backward) as its outputs on each."""
    real = [(logits[:n], [f[:n] for f in maps]) for logits, maps in output]
    fake = [(logits[n:], [f[n:] for f in maps]) for logits, maps in output]
    return real, fake


def adversarial_scale(step: int, warmup_steps: int, ramp_steps: int) -> float:
    """0 while a fresh critic warms up, then a linear ramp to 1 (`step` is the 0-based index of
    the optimizer step): an untrained critic's verdicts would only add noise."""
    if step < warmup_steps:
        return 0.0
    return min(1.0, (step - warmup_steps + 1) / max(ramp_steps, 1))
