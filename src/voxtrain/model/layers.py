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


def conv1d_time_major(x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
    """Conv1d on a (B, T, C) tensor with a (out, in, kernel) weight -> (B, T', out).

    Runs as a channels-last 2-D convolution: (B, T, C) memory is NHWC for H = 1, which
    oneDNN reads and writes directly. The usual (B, C, T) conv1d needs a transposing copy
    of the input and the output, and its backward was measurably slower.
    """
    left, right = padding
    if left != right:
        x = F.pad(x, (0, 0, left, right))
        left = 0
    y = F.conv2d(x[:, None].permute(0, 3, 1, 2), weight[:, :, None], bias, padding=(0, left))
    return y.permute(0, 2, 3, 1).squeeze(1)


class MaskedConv1d(nn.Module):
    """Length-keeping conv over time-major (B, T, C) tensors.

    The input must be zero at padded positions: a conv near an item's end then reads
    zeros from the padding exactly as it reads zeros past the sequence edge, so a padded
    item gives the same numbers as the item alone. With a mask, padded outputs are zeroed,
    which keeps that promise for the next layer.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__()
        self.pad = same_padding(kernel)
        self.conv = nn.Conv1d(in_channels, out_channels, kernel)  # (out, in, k): checkpoint layout
        # Same (out, in, k) tensor, stored (out, k, in) in memory: oneDNN's channels-last
        # weight layout, which conv1d_time_major would otherwise make by a copy every call.
        # load_state_dict copies into this layout; the exports save it contiguous.
        weight = self.conv.weight.detach()
        self.conv.weight = nn.Parameter(weight.permute(0, 2, 1).contiguous().permute(0, 2, 1))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (B, T, C_in), zero at padding; mask: (B, T) bool or None -> (B, T, C_out)."""
        y = conv1d_time_major(x, self.conv.weight, self.conv.bias, self.pad)
        return y if mask is None else y * mask[..., None].to(y.dtype)


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


class _DropoutFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:  # noqa: ANN001
        # 16 random bits per element from int64 draws: 4 elements per generator call,
        # where bernoulli_ spends one call (and a float compare) on each element.
        words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device)
        bits = words.random_(-(2**63), 2**63 - 1).view(torch.int16)[: x.numel()].view(x.shape)
        threshold = round(p * 65536)
        scale = 65536 / (65536 - threshold)  # exact inverse of the true keep probability
        # One tensor of 0 or scale (in x's dtype: bf16 rounds 1/0.9 to 1.109, as torch's own
        # bf16 dropout does) serves as the multiplier of the forward and of the backward.
        keep = torch.where(bits >= threshold - 32768, x.new_tensor(scale), x.new_zeros(()))
        ctx.save_for_backward(keep)
        return x * keep

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        (keep,) = ctx.saved_tensors
        return grad * keep, None


class Dropout(nn.Module):
    """Inverted dropout, several times faster than nn.Dropout on CPU, where bernoulli_ (one
    generator call per element) is a visible part of a training step. Drop probability is
    round(p * 65536) / 65536 (0.100006 for 0.1); it draws from torch's default generator, so
    seeding and checkpointed RNG states cover it."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":  # GPUs have a fused dropout kernel of their own
            return F.dropout(x, self.p, training=True)
        return _DropoutFn.apply(x, self.p)


class _KeepProbsAttention(torch.autograd.Function):
    """Softmax attention over (B, H, T, D) that keeps its probabilities for the backward.

    On CPU the fused (flash) kernel's backward recomputes the scores in small blocks, which
    made a decoder layer's forward + backward slower than keeping them, at the price of
    B*H*T*T saved probabilities. Its forward is faster too (plain batched matmuls and one
    softmax), at batch 1 as at training batches, so inference uses it as well. Scores and
    probabilities are in the inputs' dtype, as under autocast's own attention.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor) -> Tensor:  # noqa: ANN001
        b, h, t, d = q.shape
        scale = d**-0.5
        q, k, v = (x.reshape(b * h, t, d) for x in (q, k, v))
        bias = torch.zeros(b, 1, t, dtype=q.dtype, device=q.device).masked_fill_(~key_mask[:, None], float("-inf"))
        with torch.autocast(q.device.type, enabled=False):
            scores = torch.baddbmm(bias.repeat_interleave(h, dim=0), q, k.transpose(1, 2), alpha=scale)
            probs = torch.softmax(scores, dim=-1)
            out = torch.bmm(probs, v)
        ctx.save_for_backward(q, k, v, probs)
        ctx.scale, ctx.shape = scale, (b, h, t, d)
        return out.view(b, h, t, d)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:  # noqa: ANN001
        q, k, v, probs = ctx.saved_tensors
        shape = ctx.shape
        grad = grad.reshape(q.shape).to(q.dtype)
        grad_v = torch.bmm(probs.transpose(1, 2), grad)
        grad_probs = torch.bmm(grad, v.transpose(1, 2))
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype).mul_(ctx.scale)
        grad_q = torch.bmm(grad_scores, k)
        grad_k = torch.bmm(grad_scores.transpose(1, 2), q)
        return grad_q.view(shape), grad_k.view(shape), grad_v.view(shape), None


# Above this size of probabilities per layer, attention uses the fused kernel (memory, not speed).
_MAX_PROBS_BYTES = 256 << 20


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
        dropout = self.dropout if self.training else 0.0
        probs_bytes = b * self.heads * t * t * q.element_size()
        if x.device.type == "cpu" and dropout == 0 and probs_bytes <= _MAX_PROBS_BYTES:
            y = _KeepProbsAttention.apply(q, k, v, mask)
        else:
            # dropout_p > 0 leaves the fused (flash) kernel for the math path on CPU.
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :], dropout_p=dropout)
        return self.out(y.transpose(1, 2).reshape(b, t, h))


class ConvFeedForward(nn.Module):
    """Position-wise feed-forward with a wide first conv (FastSpeech's replacement for the MLP).

    Expects its input to be zero at padded positions (FFTStack keeps that invariant) and
    leaves padded outputs for the caller to zero: everything after the wide conv is
    position-wise, so garbage at padded positions stays there.
    """

    def __init__(self, hidden: int, filter_size: int, kernel: int) -> None:
        super().__init__()
        self.conv1 = MaskedConv1d(hidden, filter_size, kernel)
        self.conv2 = nn.Conv1d(filter_size, hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T, H) -> (B, T, H)."""
        y = F.relu(self.conv1(x))
        # The 1x1 conv as a plain matmul over (B*T, filter); same weights, same checkpoints.
        return F.linear(y, self.conv2.weight.squeeze(-1), self.conv2.bias)


class FFTBlock(nn.Module):
    """Feed-forward Transformer block, post-norm as in FastSpeech2."""

    def __init__(
        self, hidden: int, heads: int, filter_size: int, kernel: int, dropout: float, attention_dropout: float
    ) -> None:
        super().__init__()
        self.attn = MultiHeadSelfAttention(hidden, heads, attention_dropout)
        self.norm1 = nn.LayerNorm(hidden)
        self.ffn = ConvFeedForward(hidden, filter_size, kernel)
        self.norm2 = nn.LayerNorm(hidden)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, keep: Tensor) -> Tensor:
        """x zero at padding; keep = mask as (B, T, 1) floats. Output zero at padding."""
        x = self.norm1(x + self.drop(self.attn(x, mask))) * keep
        return self.norm2(x + self.drop(self.ffn(x))) * keep


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
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.positions = PositionalEncoding(hidden, max_positions)
        self.blocks = nn.ModuleList(
            FFTBlock(hidden, heads, filter_size, kernel, dropout, attention_dropout) for _ in range(layers)
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, T, H); mask: (B, T) bool -> (B, T, H), zero at padding."""
        keep = mask[..., None].to(x.dtype)
        x = self.positions(x) * keep
        for block in self.blocks:
            x = block(x, mask, keep)
        return x
