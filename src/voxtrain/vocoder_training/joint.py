"""Joint fine-tuning (JETS-style): the acoustic model trained through the generator.

In the two-stage path the vocoder learns the acoustic model's mels as they were when its
pairs were made, and the acoustic model never hears what the vocoder makes of its mels. Here
one loss trains both: each step runs the acoustic model teacher-forced on whole clips (its
durations from the aligner, so every frame still lines up with the real audio), cuts each
clip's segment out of the predicted mel, and the generator renders it. The waveform losses
(and the critic's, as `train-vocoder` has them) reach the acoustic model through the
generator; the acoustic model's own FastSpeech2 losses keep its durations, pitch and energy
predictors and its aligner in step with the mels they shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from voxtrain.config import Config
from voxtrain.data.loader import FeatureDataset, collate
from voxtrain.model import Batch, FastSpeech2, FastSpeech2Loss
from voxtrain.vocoder_training.pairs import SILENT_MEL, PairSet


class JointModel(nn.Module):
    """The generator and the acoustic model as one module: one checkpoint `model`, one
    optimizer with a parameter group each (their own learning rates), one forward (so DDP
    syncs both models' gradients)."""

    def __init__(self, generator: nn.Module, acoustic: FastSpeech2, frames: int) -> None:
        super().__init__()
        self.generator, self.acoustic, self.frames = generator, acoustic, frames

    def forward(self, batch: JointBatch) -> tuple[dict[str, Any], Tensor]:
        """The acoustic model's teacher-forced outputs on the whole clips, and the generator's
        audio (B, 1, frames * hop) of each clip's segment of its predicted mel, with gradient."""
        out = self.acoustic(batch.clips)
        mel = out["mel_postnet"] if out.get("mel_postnet") is not None else out["mel_pred"]
        return out, self.generator(segments(mel, batch.clips.mel_lens, batch.starts, self.frames))


@dataclass
class JointBatch:
    """Whole clips for the acoustic model, where each clip's segment starts, and its real audio."""

    clips: Batch
    starts: Tensor  # (B,) long
    wavs: Tensor  # (B, frames * hop)

    def __len__(self) -> int:
        return len(self.starts)

    def to(self, device: torch.device, non_blocking: bool = False) -> JointBatch:
        return JointBatch(self.clips.to(device, non_blocking=non_blocking), self.starts.to(device),
                          self.wavs.to(device, non_blocking=non_blocking))

    def split(self, parts: int) -> list[JointBatch]:
        # Batch.split's bounds, so each part's starts and audio stay with its clips.
        n = len(self)
        bounds = [round(i * n / parts) for i in range(parts + 1)]
        spans = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]
        return [JointBatch(clips, self.starts[lo:hi], self.wavs[lo:hi])
                for clips, (lo, hi) in zip(self.clips.split(parts), spans, strict=True)]

    def frame_counts(self) -> tuple[int, int]:
        return self.clips.frame_counts()


class JointData:
    """Joint batches from (clip, start) picks: clip i is clip i of the feature store and of the pairs."""

    def __init__(self, dataset: FeatureDataset, pairs: PairSet, frames: int) -> None:
        self.dataset, self.pairs, self.frames = dataset, pairs, frames

    def batch(self, picks: list[tuple[int, int]]) -> JointBatch:
        wavs = self.pairs.batch(picks, self.frames)[1]
        return JointBatch(collate([self.dataset[i] for i, _ in picks]),
                          torch.tensor([start for _, start in picks], dtype=torch.long), wavs)


def segments(mels: Tensor, lengths: Tensor, starts: Tensor, frames: int) -> Tensor:
    """(B, T, M) mels -> (B, M, frames) from each start; silence past a clip's end, as the
    real audio of the segment has (PairSet.segment)."""
    index = starts[:, None] + torch.arange(frames, device=mels.device)[None]  # (B, frames)
    inside = index < lengths[:, None]
    index = index.clamp(max=mels.shape[1] - 1)
    cut = torch.gather(mels, 1, index[..., None].expand(-1, -1, mels.shape[2]))
    return torch.where(inside[..., None], cut, torch.full_like(cut, SILENT_MEL)).transpose(1, 2)


def acoustic_loss(config: Config) -> FastSpeech2Loss:
    """The acoustic model's own losses. Its aligner is trained already: the binarization loss
    applies from the first step, as configs/finetune.yaml has it."""
    aligner = config.model.aligner.model_copy(update={"binarization_start_step": 0, "binarization_ramp_steps": 1})
    return FastSpeech2Loss(config.training, aligner)


def joint_optimizer(model: JointModel, config: Config) -> torch.optim.Optimizer:
    """AdamW over both models; the acoustic group's LR is `joint_lr`, kept as a ratio to the
    generator's because the step sets every group from the generator's schedule."""
    v = config.vocoder_training
    model.acoustic.requires_grad_(True)  # loaded for inference, with gradients off
    groups = [{"params": list(model.generator.parameters())},
              {"params": list(model.acoustic.parameters()), "lr_scale": v.joint_lr / v.lr}]
    return torch.optim.AdamW(groups, lr=v.lr, betas=tuple(v.betas), weight_decay=v.weight_decay)
