"""Variance adaptor parts: predictors, pitch/energy embeddings and the length regulator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxtrain.config import ModelConfig
from voxtrain.model.layers import Dropout, MaskedConv1d


class VariancePredictor(nn.Module):
    """(conv -> relu -> layernorm -> dropout) x layers -> linear: one scalar per token."""

    def __init__(self, in_dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        channels = [in_dim] + [cfg.predictor_filter] * cfg.predictor_layers
        self.convs = nn.ModuleList(
            MaskedConv1d(c_in, c_out, cfg.predictor_kernel)
            for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.predictor_filter) for _ in self.convs)
        self.drop = Dropout(cfg.predictor_dropout)
        self.proj = nn.Linear(cfg.predictor_filter, 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, N, C); mask: (B, N) -> (B, N), zero at padding."""
        x = x * mask[..., None].to(x.dtype)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.relu(conv(x, mask))
            # LayerNorm of a zero row is its bias: re-zero so the next conv sees true padding.
            x = self.drop(norm(x)) * mask[..., None].to(x.dtype)
        return self.proj(x).squeeze(-1) * mask.to(x.dtype)


class VarianceEmbedding(nn.Module):
    """FastPitch-style conv embedding of a phoneme-level scalar (pitch or energy)."""

    def __init__(self, hidden: int, kernel: int) -> None:
        super().__init__()
        self.conv = MaskedConv1d(1, hidden, kernel)

    def forward(self, values: Tensor, mask: Tensor) -> Tensor:
        """values: (B, N); mask: (B, N) -> (B, N, hidden)."""
        return self.conv((values * mask.to(values.dtype))[..., None], mask)


def regulate_length(x: Tensor, durations: Tensor, max_len: int | None = None) -> tuple[Tensor, Tensor]:
    """Repeat token i of x durations[b, i] times: (B, N, C) -> (B, T, C), plus (B,) lengths.

    Vectorised with cumsum + searchsorted: frame t belongs to the first token whose
    cumulative end exceeds t. Frames past an item's total are zero. max_len pads (or
    truncates) the frame axis; None means the longest item.
    """
    durations = durations.clamp_min(0).long()
    ends = durations.cumsum(dim=1)
    lengths = ends[:, -1] if ends.shape[1] else torch.zeros(len(x), dtype=torch.long, device=x.device)
    if max_len is None:
        max_len = int(lengths.max().item()) if lengths.numel() else 0
    frames = torch.arange(max_len, device=x.device).expand(len(x), max_len).contiguous()
    token = torch.searchsorted(ends, frames, right=True).clamp_max(max(x.shape[1] - 1, 0))
    out = torch.gather(x, 1, token[..., None].expand(-1, -1, x.shape[2]))
    frame_mask = frames < lengths[:, None]
    return out * frame_mask[..., None].to(out.dtype), lengths.clamp_max(max_len)


def durations_from_log(log_durations: Tensor, mask: Tensor, pace: float = 1.0) -> Tensor:
    """Predicted log(d+1) -> integer durations at a pace (>1 is faster), >= 0, 0 at padding.

    An item whose durations all round to zero would yield an empty mel that the decoder's
    attention cannot handle, so its most confident token keeps one frame.
    """
    if pace <= 0:
        raise ValueError(f"pace must be > 0, got {pace}")
    frames = (torch.expm1(log_durations.float()) / pace).clamp_min(0)
    durations = torch.round(frames).long() * mask.long()
    empty = durations.sum(1) == 0
    if empty.any():
        best = frames.masked_fill(~mask, -1.0).argmax(dim=1)
        durations[empty, best[empty]] = 1
    return durations
