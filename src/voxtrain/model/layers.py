"""Building blocks shared by the FastSpeech2 encoder, decoder and predictors.

Every module here takes a boolean mask (True at real positions) and zeroes padded
positions between sub-layers. That is what makes a padded item produce the same
numbers at its real positions as the same item alone: convolutions near the end of a
sequence read zeros from the padding exactly as they read zeros from conv padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True at real positions."""
    if max_len is None:
        max_len = int(lengths.max().item()) if lengths.numel() else 0
    positions = torch.arange(max_len, device=lengths.device)
    return positions[None, :] < lengths[:, None]


def sinusoid_table(n_positions: int, dim: int) -> Tensor:
    """(n_positions, dim) sinusoidal position table (sin on even, cos on odd channels)."""
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    # Frequencies as in "Attention is all you need"; computed in log space for range.
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div[: dim // 2])
    return table


def same_padding(kernel: int) -> tuple[int, int]:
    """(left, right) padding that keeps the length for any kernel, odd or even."""
    return (kernel - 1) // 2, kernel // 2


class MaskedConv1d(nn.Module):
    """Conv1d over (B, C, T) that keeps the length and zeroes padded outputs."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__()
        self.pad = same_padding(kernel)
        self.conv = nn.Conv1d(in_channels, out_channels, kernel)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C, T); mask: (B, T) bool."""
        x = x * mask[:, None, :].to(x.dtype)
        y = self.conv(F.pad(x, self.pad))
        return y * mask[:, None, :].to(y.dtype)


class PositionalEncoding(nn.Module):
    """Adds sinusoidal positions; extends the table on the fly for unusually long inputs."""

    def __init__(self, dim: int, max_positions: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("table", sinusoid_table(max_positions, dim), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        table = self.table
        if length > table.shape[0]:
            # Inference at a slow pace can exceed max_positions; recomputing beats crashing.
            table = sinusoid_table(length, self.dim).to(x.device)
        return x + table[:length].to(x.dtype)[None]


class MultiHeadSelfAttention(nn.Module):
    """Self-attention whose keys at padded positions get exactly zero weight."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, T, H); mask: (B, T) bool. Needs at least one real position per item."""
        b, t, h = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        key_mask = mask[:, None, None, :]  # broadcast over heads and queries
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, t, h))


class ConvFeedForward(nn.Module):
    """Position-wise feed-forward with a wide first conv (FastSpeech's replacement for the MLP)."""

    def __init__(self, hidden: int, filter_size: int, kernel: int) -> None:
        super().__init__()
        self.conv1 = MaskedConv1d(hidden, filter_size, kernel)
        self.conv2 = nn.Conv1d(filter_size, hidden, 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        y = F.relu(self.conv1(x.transpose(1, 2), mask))
        return self.conv2(y).transpose(1, 2)


class FFTBlock(nn.Module):
    """Feed-forward Transformer block, post-norm as in FastSpeech2."""

    def __init__(self, hidden: int, heads: int, filter_size: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadSelfAttention(hidden, heads, dropout)
        self.norm1 = nn.LayerNorm(hidden)
        self.ffn = ConvFeedForward(hidden, filter_size, kernel)
        self.norm2 = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        keep = mask[..., None].to(x.dtype)
        x = self.norm1(x + self.drop(self.attn(x, mask))) * keep
        x = self.norm2(x + self.drop(self.ffn(x, mask))) * keep
        return x


class FFTStack(nn.Module):
    """Positions + a stack of FFT blocks: the FastSpeech2 encoder and decoder."""

    def __init__(
        self,
        hidden: int,
        layers: int,
        heads: int,
        filter_size: int,
        kernel: int,
        dropout: float,
        max_positions: int,
    ) -> None:
        super().__init__()
        self.positions = PositionalEncoding(hidden, max_positions)
        self.blocks = nn.ModuleList(FFTBlock(hidden, heads, filter_size, kernel, dropout) for _ in range(layers))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, T, H); mask: (B, T) bool -> (B, T, H), zero at padding."""
        x = self.positions(x) * mask[..., None].to(x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        return x
