"""Monotonic alignment search (Glow-TTS / RAD-TTS style), batched in torch.

The dynamic programme runs over mel frames only; each step is a vectorised update of all
tokens of all items, so a batch costs T_mel small tensor ops instead of a Python loop per
item (and no numba dependency).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Score of an unreachable cell. Finite (not -inf) so that when T_mel < N the search still
# returns a monotonic path (skipping tokens) instead of comparisons between -infs.
_UNREACHABLE = -1e12


@torch.no_grad()
def monotonic_alignment_search(log_attn: Tensor, text_lens: Tensor, mel_lens: Tensor) -> Tensor:
    """Most probable monotonic hard alignment.

    log_attn: (B, T_mel, N) log-attention; text_lens, mel_lens: (B,) true lengths.
    Returns (B, T_mel, N) 0/1 in log_attn's dtype: each real mel frame is assigned to
    exactly one real token, tokens advance by 0 or 1 per frame from the first to the last
    token, so every token gets >= 1 frame when T_mel >= N. Padded rows/columns are 0.
    """
    b, t_max, n_max = log_attn.shape
    device = log_attn.device
    # float64: path scores are sums over up to thousands of frames.
    logp = log_attn.detach().to(torch.float64)
    text_mask = torch.arange(n_max, device=device)[None, :] < text_lens[:, None]
    logp = logp.masked_fill(~text_mask[:, None, :], _UNREACHABLE)

    # from_prev[b, t, n]: the best path into (t, n) came from token n-1 at frame t-1.
    from_prev = torch.zeros(b, t_max, n_max, dtype=torch.bool, device=device)
    score = torch.full((b, n_max), _UNREACHABLE, dtype=torch.float64, device=device)
    score[:, 0] = 0.0
    score = score + logp[:, 0]
    floor = torch.full((b, 1), _UNREACHABLE, dtype=torch.float64, device=device)
    for t in range(1, t_max):
        advance = torch.cat([floor, score[:, :-1]], dim=1)
        take = advance > score
        from_prev[:, t] = take
        score = torch.where(take, advance, score) + logp[:, t]

    # Backtrack from the last real token at each item's last real frame.
    hard = torch.zeros(b, t_max, n_max, dtype=log_attn.dtype, device=device)
    rows = torch.arange(b, device=device)
    index = (text_lens - 1).clamp_min(0).to(torch.long)
    for t in range(t_max - 1, -1, -1):
        active = t < mel_lens
        # A write of 0/1 to every row, not a write of 1 to the active rows: boolean indexing
        # would make the GPU report the active count to the host at every frame.
        hard[rows, t, index] = active.to(hard.dtype)
        step = from_prev[rows, t, index] & active
        index = (index - step.long()).clamp_min(0)
    return hard


def durations_from_alignment(hard: Tensor) -> Tensor:
    """(B, T_mel, N) hard alignment -> (B, N) long frames per token."""
    return hard.sum(dim=1).round().long()
