"""What a vocoder fine-tune minimises: the generator's waveform losses on a batch of segments,
the critic's turn on the same audio, and the joint fine-tune's sum with the acoustic model's
own losses (`joint.py`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from voxtrain.adversarial import adversarial_scale, critic_loss, generator_losses, halves
from voxtrain.config import Config
from voxtrain.vocoder.losses import MelLoss, MultiResolutionSTFTLoss
from voxtrain.vocoder_training.joint import JointBatch, acoustic_loss


@dataclass
class Segments:
    """A batch of (teacher-forced mel, real audio) segments: mels (B, n_mels, F), wavs (B, F * hop)."""

    mels: torch.Tensor
    wavs: torch.Tensor

    def __len__(self) -> int:
        return len(self.mels)

    def to(self, device: torch.device, non_blocking: bool = False) -> Segments:
        return Segments(self.mels.to(device, non_blocking=non_blocking),
                        self.wavs.to(device, non_blocking=non_blocking))

    def split(self, parts: int) -> list[Segments]:
        size = -(-len(self) // parts)
        return [Segments(m, w) for m, w in zip(self.mels.split(size), self.wavs.split(size), strict=True)]

    def frame_counts(self) -> tuple[int, int]:
        frames = self.mels.shape[0] * self.mels.shape[2]
        return frames, frames  # segments are cut to one length: no padding


class VocoderObjective:
    """The generator's losses on a batch of segments: reconstruction (mel + STFT), and with a
    critic, after its warm-up, the adversarial and feature-matching losses ramping in. It
    keeps the step's generated audio (detached) for the critic's turn, so the generator runs
    once per step."""

    def __init__(self, config: Config, critic: torch.nn.Module | None) -> None:
        self.w = config.vocoder_training
        self.mel_loss = MelLoss(config.audio)
        self.stft_loss = MultiResolutionSTFTLoss(self.w.stft_resolutions)
        self.critic = critic
        self.generated: list[torch.Tensor] = []

    def __call__(self, generator: torch.nn.Module, batch: Segments, step: int) -> tuple[torch.Tensor, dict]:
        return self.waveform_losses(generator(batch.mels), batch.wavs, step)

    def waveform_losses(self, generated: torch.Tensor, wavs: torch.Tensor, step: int) -> tuple[torch.Tensor, dict]:
        if self.critic is not None:
            self.generated.append(generated.detach())
        mel = self.mel_loss(generated, wavs)
        sc, mag = self.stft_loss(generated, wavs)
        total = self.w.mel_weight * mel + self.w.stft_weight * (sc + mag)
        terms = {"mel": mel, "sc": sc, "mag": mag}
        scale = adversarial_scale(step, self.w.critic_warmup_steps, self.w.adversarial_ramp_steps)
        if self.critic is not None and scale > 0:
            adversarial, matching = generator_losses(self.critic(wavs), self.critic(generated))
            total = total + scale * (self.w.adversarial_weight * adversarial + self.w.feature_weight * matching)
            terms |= {"adversarial": adversarial, "feature_matching": matching}
        return total, {"total": total, **terms}

    def critic_objective(self, critic: torch.nn.Module, batch: Segments, step: int) -> tuple[torch.Tensor, dict]:
        """The critic's least-squares loss on the real segments and the generator's audio of them.
        One forward over both (a DDP-wrapped critic allows one per backward)."""
        fake = self.generated.pop(0).reshape(batch.wavs.shape)
        real_out, fake_out = halves(critic(torch.cat([batch.wavs, fake])), len(batch))
        loss = critic_loss(real_out, fake_out)
        return loss, {"total": loss, "critic": loss}


class JointObjective(VocoderObjective):
    """The joint fine-tune's loss: the generator's waveform losses on the acoustic model's own
    segments, through which both models learn, plus the acoustic model's losses, weighted."""

    def __init__(self, config: Config, critic: torch.nn.Module | None) -> None:
        super().__init__(config, critic)
        self.acoustic_loss = acoustic_loss(config)

    def __call__(self, model: torch.nn.Module, batch: JointBatch, step: int) -> tuple[torch.Tensor, dict]:
        """`model`: a JointModel, or the DDP wrapper of one (its forward is what syncs gradients)."""
        out, generated = model(batch)
        acoustic, parts = self.acoustic_loss(out, batch.clips, step)
        total, terms = self.waveform_losses(generated, batch.wavs, step)
        total = total + self.w.joint_acoustic_weight * acoustic
        acoustic_terms = {f"acoustic_{k}": parts[k] for k in ("mel", "duration", "pitch", "energy")}
        return total, terms | acoustic_terms | {"total": total, "acoustic": acoustic.detach()}
