"""Global-variance (GV) post-filtering of log-mels: a zero-training remedy for over-smoothing.

A model trained on a reconstruction loss predicts the conditional mean, so its mels vary less
over time than real ones. The post-filter rescales each mel bin of an utterance around its own
mean so that the bin's variance over time reaches the variance real utterances have on average
(the "global variance", measured once on the training mels). The mean of every bin is kept, so
loudness and spectral balance do not move; only the contrast over time is restored.

Mels here are (n_mels, T), the vocoder's layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

# Floor of a bin's variance: a constant bin (silence at the clamp floor) must not be blown up.
VARIANCE_FLOOR = 1e-6


def per_bin_variance(mel: np.ndarray | torch.Tensor) -> np.ndarray:
    """Each bin's variance over time of one (n_mels, T) log-mel."""
    return torch.as_tensor(mel, dtype=torch.float64).var(dim=1, unbiased=False).numpy()


def global_variance(mels: Iterable[np.ndarray | torch.Tensor]) -> np.ndarray:
    """The mean over utterances of each bin's variance over time: what the post-filter restores."""
    variances = [per_bin_variance(m) for m in mels]
    if not variances:
        raise ValueError("no mels to measure the global variance on")
    return np.mean(variances, axis=0)


@dataclass(frozen=True)
class GlobalVariancePostFilter:
    """Call it with a (n_mels, T) log-mel tensor; get the same mel with each bin's variance over
    time moved toward `target` (per bin). strength 1 restores it fully, 0 leaves the mel as it
    is; in between, the variance ratio is applied geometrically (target**s * own**(1-s))."""

    target: np.ndarray
    strength: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {self.strength}")
        if np.ndim(self.target) != 1 or not np.all(np.isfinite(self.target)) or np.any(np.asarray(self.target) < 0):
            raise ValueError("target must be one finite, non-negative variance per mel bin")

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.shape[0] != len(self.target):
            raise ValueError(f"the mel has {mel.shape[0]} bins, the global variance {len(self.target)}")
        if mel.shape[1] < 2:  # one frame has no variance over time to restore
            return mel
        x = mel.double()
        mean = x.mean(dim=1, keepdim=True)
        own = x.var(dim=1, unbiased=False, keepdim=True).clamp_min(VARIANCE_FLOOR)
        target = torch.as_tensor(self.target, dtype=torch.float64, device=mel.device).clamp_min(VARIANCE_FLOOR)
        scale = (target.unsqueeze(1) / own) ** (self.strength / 2)
        return (mean + (x - mean) * scale).to(mel.dtype)
