"""The optimizer of a run, built the same way by the trainer and the benchmarks."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from voxtrain.config import TrainingConfig
from voxtrain.train.state import lr_at


def make_optimizer(
    params: Iterable[torch.nn.Parameter], cfg: TrainingConfig, device: torch.device
) -> torch.optim.Optimizer:
    """Adam or AdamW at the schedule's first LR. On CPU and CUDA the fused kernel: one pass
    over all parameters instead of a dozen tensor ops each, which on CPU is a measurable
    share of a step. The state dict is the same either way, so checkpoints move between
    devices."""
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(
        params, lr=lr_at(1, cfg), betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
        fused=device.type in ("cpu", "cuda"),
    )
