"""Pieces of training state that must survive a resume exactly: LR schedule and RNG."""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from voxtrain.config import TrainingConfig


def lr_at(update: int, cfg: TrainingConfig) -> float:
    """LR of the `update`-th optimizer step (1-based). A pure function of the step, so a
    resumed run follows the same curve, and it is always laid out over max_steps."""
    s, warm = max(update, 1), cfg.warmup_steps
    if cfg.scheduler == "constant":
        factor = min(1.0, s / warm) if warm else 1.0
    elif cfg.scheduler == "noam":
        # Normalised so the peak (at the end of warm-up) is exactly cfg.lr.
        factor = min(s / warm, math.sqrt(warm / s)) if warm else 1.0 / math.sqrt(s)
    else:  # warmup_cosine: linear warm-up, cosine decay to 10% at max_steps
        if warm and s <= warm:
            factor = s / warm
        else:
            progress = min(1.0, (s - warm) / max(1, cfg.max_steps - warm))
            factor = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * factor


def capture_rng() -> dict:
    """Every RNG the loop touches, as tensors and plain data (loadable with weights_only)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": list(random.getstate()[1]),
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    random.setstate((3, tuple(state["python"]), None))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
