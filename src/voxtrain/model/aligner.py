"""Learned text-to-mel alignment (Badlani et al. 2021, "One TTS Alignment To Rule Them All").

The encoder scores every (mel frame, token) pair by a negative scaled L2 distance between
projected mel frames and projected text embeddings, normalises over tokens and adds a
beta-binomial prior that favours the diagonal. The forward-sum loss trains it, MAS turns
the soft result into durations.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxtrain.config import AlignerConfig
from voxtrain.model.layers import MaskedConv1d

# Finite stand-in for log(0): exp() of it is exactly 0 in fp32, yet 0 * it stays 0 (no NaN),
# so padded entries can flow through sums weighted by a 0/1 mask.
LOG_ZERO = -1e9


@lru_cache(maxsize=512)
def _log_beta_binomial(n_text: int, n_mel: int, scaling: float) -> Tensor:
    """(n_mel, n_text) log beta-binomial prior; frame i favours token ~ i * n_text / n_mel.

    Computed in float64 (lgamma of large arguments loses digits in fp32) and cached, since
    a corpus has far fewer distinct (n_text, n_mel) pairs than training steps.
    """
    n = n_text - 1
    k = torch.arange(n_text, dtype=torch.float64)[None, :]
    i = torch.arange(1, n_mel + 1, dtype=torch.float64)[:, None]
    a = scaling * i
    b = scaling * (n_mel + 1 - i)
    log_choose = torch.lgamma(torch.tensor(n + 1.0)) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
    log_beta_num = torch.lgamma(k + a) + torch.lgamma(n - k + b) - torch.lgamma(n + a + b)
    log_beta_den = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    return (log_choose + log_beta_num - log_beta_den).to(torch.float32)


def log_alignment_prior(text_lens: Tensor, mel_lens: Tensor, n_text: int, n_mel: int, scaling: float) -> Tensor:
    """(B, n_mel, n_text) padded log prior; 0 at padded positions (they are masked anyway)."""
    prior = torch.zeros(len(text_lens), n_mel, n_text)
    for b, (nt, nm) in enumerate(zip(text_lens.tolist(), mel_lens.tolist(), strict=True)):
        prior[b, :nm, :nt] = _log_beta_binomial(int(nt), int(nm), float(scaling))
    return prior.to(text_lens.device)


class AlignmentEncoder(nn.Module):
    """Scores mel frames against tokens; returns (attn_logprob, attn_soft, attn_logsoft)."""

    def __init__(self, text_channels: int, mel_channels: int, cfg: AlignerConfig) -> None:
        super().__init__()
        dim = cfg.attention_dim
        self.temperature = cfg.temperature
        self.prior_scaling = cfg.prior_scaling
        self.text_convs = nn.ModuleList(
            [MaskedConv1d(text_channels, 2 * text_channels, 3), MaskedConv1d(2 * text_channels, dim, 3)]
        )
        self.mel_convs = nn.ModuleList(
            [
                MaskedConv1d(mel_channels, 2 * mel_channels, 3),
                MaskedConv1d(2 * mel_channels, mel_channels, 3),
                MaskedConv1d(mel_channels, dim, 3),
            ]
        )

    @staticmethod
    def _project(convs: nn.ModuleList, x: Tensor, mask: Tensor) -> Tensor:
        x = x * mask[..., None].to(x.dtype)  # padded frames of a batch may hold anything
        for i, conv in enumerate(convs):
            x = conv(x, mask)
            if i < len(convs) - 1:
                x = F.relu(x)
        return x

    def forward(self, text: Tensor, mels: Tensor, text_mask: Tensor, mel_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """text: (B, N, C) embeddings, mels: (B, T, M), masks True at real positions.

        Returns three (B, 1, T, N) tensors: attn_logprob (log-softmax over tokens plus log
        prior, the forward-sum loss input), attn_soft (its renormalised softmax) and
        attn_logsoft (log of attn_soft, the MAS input). Padded entries hold LOG_ZERO / 0.
        """
        # Distances at temperature 5e-4 are differences of large squared norms: bf16 would
        # round them to garbage, so the scoring always runs in fp32.
        with torch.autocast(device_type=text.device.type, enabled=False):
            keys = self._project(self.text_convs, text.float(), text_mask)
            queries = self._project(self.mel_convs, mels.float(), mel_mask)
            dist = (
                queries.pow(2).sum(-1, keepdim=True)
                - 2 * queries @ keys.transpose(1, 2)
                + keys.pow(2).sum(-1)[:, None, :]
            ).clamp_min(0)
            valid = mel_mask[:, :, None] & text_mask[:, None, :]
            scores = (-self.temperature * dist).masked_fill(~text_mask[:, None, :], LOG_ZERO)
            prior = log_alignment_prior(
                text_mask.sum(1), mel_mask.sum(1), text.shape[1], mels.shape[1], self.prior_scaling
            )
            logprob = (F.log_softmax(scores, dim=-1) + prior).masked_fill(~valid, LOG_ZERO)
            logsoft = F.log_softmax(logprob, dim=-1).masked_fill(~valid, LOG_ZERO)
            soft = logsoft.exp() * valid
        return logprob[:, None], soft[:, None], logsoft[:, None]
