"""FastSpeech2 + aligner training objective. Padding never contributes to any term."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxtrain.config import AlignerConfig, TrainingConfig
from voxtrain.model.aligner import LOG_ZERO
from voxtrain.model.batch import Batch

# Log-probability of the CTC blank before renormalisation (Badlani et al. use -1): the
# blank lets mel frames be absorbed without forcing probability onto a wrong token.
_BLANK_LOGPROB = -1.0
# Floor of a Laplace component's log-scale: below it a component collapsed onto a few frames'
# values would drive the likelihood (and its gradient, 1 / b) without bound.
_MIN_LOG_SCALE = -7.0


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of values over positions where mask is True (mask broadcasts over trailing dims)."""
    while mask.dim() < values.dim():
        mask = mask[..., None]
    weight = mask.to(values.dtype).expand_as(values)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def forward_sum_loss(attn_logprob: Tensor, text_lens: Tensor, mel_lens: Tensor) -> Tensor:
    """CTC of each utterance's soft alignment against the token sequence 1..N.

    attn_logprob: (B, 1, T, N). Per-utterance loss is divided by N (as CTC's 'mean'
    reduction does), then averaged over the batch.
    """
    with torch.autocast(device_type=attn_logprob.device.type, enabled=False):
        logprob = attn_logprob[:, 0].float()
        n_max = logprob.shape[2]
        text_mask = torch.arange(n_max, device=logprob.device)[None, :] < text_lens[:, None]
        # Padded columns get exactly zero mass after the softmax, so they do not change it.
        logprob = logprob.masked_fill(~text_mask[:, None, :], LOG_ZERO)
        logprob = F.pad(logprob, (1, 0), value=_BLANK_LOGPROB)
        log_probs = F.log_softmax(logprob, dim=-1).transpose(0, 1)  # (T, B, N + 1)
        targets = torch.arange(1, n_max + 1, device=logprob.device).expand(len(text_lens), n_max)
        per_item = F.ctc_loss(log_probs, targets, mel_lens, text_lens, blank=0, reduction="none", zero_infinity=True)
        return (per_item / text_lens.clamp_min(1).float()).mean()


def binarization_loss(attn_hard: Tensor, attn_soft: Tensor) -> Tensor:
    """-sum(hard * log soft) / sum(hard): pulls the soft alignment onto the MAS path."""
    with torch.autocast(device_type=attn_soft.device.type, enabled=False):
        hard = attn_hard.float()
        log_soft = torch.log(attn_soft.float().clamp_min(1e-12))
        return -(hard * log_soft).sum() / hard.sum().clamp_min(1.0)


def mixture_nll(target: Tensor, locations: Tensor, log_scales: Tensor, logits: Tensor, mel_mask: Tensor) -> Tensor:
    """Mean negative log-likelihood of the target mel (B, T, M) under a Laplace mixture per bin
    (each (B, T, M, K)), over real frames and bins."""
    with torch.autocast(device_type=target.device.type, enabled=False):
        log_scales = log_scales.float().clamp_min(_MIN_LOG_SCALE)
        distance = (target.float()[..., None] - locations.float()).abs()
        log_density = -math.log(2.0) - log_scales - distance * torch.exp(-log_scales)
        nll = -torch.logsumexp(F.log_softmax(logits.float(), dim=-1) + log_density, dim=-1)
        # Filled, not only weighted by the mask: padded targets hold anything, and 0 * inf is nan.
        return _masked_mean(nll.masked_fill(~mel_mask[..., None], 0.0), mel_mask)


def binarization_weight(step: int, aligner: AlignerConfig, final: float) -> float:
    """0 before binarization_start_step, then linear to `final` over binarization_ramp_steps."""
    if step < aligner.binarization_start_step:
        return 0.0
    if aligner.binarization_ramp_steps == 0:
        return final
    progress = (step - aligner.binarization_start_step) / aligner.binarization_ramp_steps
    return final * min(1.0, progress)


class FastSpeech2Loss(nn.Module):
    """`(outputs, batch, step) -> (total, {mel, duration, pitch, energy, forward_sum,
    binarization, total})`, plus `mel_mixture` for a model with a mel mixture. Dict entries
    are detached and unweighted except `total`."""

    def __init__(self, training: TrainingConfig, aligner: AlignerConfig) -> None:
        super().__init__()
        self.weights = training.loss_weights
        self.aligner = aligner
        self.mel_loss = F.l1_loss if training.mel_loss == "l1" else F.mse_loss

    def _mel_term(self, pred: Tensor, target: Tensor, mel_mask: Tensor) -> Tensor:
        return _masked_mean(self.mel_loss(pred.float(), target.float(), reduction="none"), mel_mask)

    @staticmethod
    def _scalar_term(pred: Tensor, target: Tensor, text_mask: Tensor) -> Tensor:
        return _masked_mean((pred.float() - target.float()) ** 2, text_mask)

    def forward(self, outputs: dict[str, Any], batch: Batch, step: int) -> tuple[Tensor, dict]:
        text_mask, mel_mask = outputs["text_mask"], outputs["mel_mask"]
        mels = batch.mels
        mel = self._mel_term(outputs["mel_pred"], mels, mel_mask)
        post = None if outputs.get("mel_postnet") is None else self._mel_term(outputs["mel_postnet"], mels, mel_mask)
        # A mixture trains on its likelihood; `mel` still reports the error of the mel it speaks,
        # so val_mel (best_by, forecasts) compares with runs without a mixture.
        mixture = outputs.get("mel_mixture")
        nll = None if mixture is None else mixture_nll(mels, *mixture, mel_mask)
        fit = mel if nll is None else nll
        if post is not None:
            mel, fit = mel + post, fit + post

        log_dur_target = torch.log1p(outputs["duration_target"].float())
        duration = _masked_mean((outputs["log_duration_pred"].float() - log_dur_target) ** 2, text_mask)
        pitch = self._scalar_term(outputs["pitch_pred"], outputs["pitch_target"], text_mask)
        energy = self._scalar_term(outputs["energy_pred"], outputs["energy_target"], text_mask)
        fsum = forward_sum_loss(outputs["attn_logprob"], batch.phoneme_lens, batch.mel_lens)
        binar = binarization_loss(outputs["attn_hard"], outputs["attn_soft"])

        w = self.weights
        total = (
            w.mel * fit
            + w.duration * duration
            + w.pitch * pitch
            + w.energy * energy
            + w.forward_sum * fsum
            + binarization_weight(step, self.aligner, w.binarization) * binar
        )
        terms = {
            "mel": mel,
            "duration": duration,
            "pitch": pitch,
            "energy": energy,
            "forward_sum": fsum,
            "binarization": binar,
            "total": total,
        }
        if nll is not None:
            terms["mel_mixture"] = nll
        return total, {k: v.detach() for k, v in terms.items()}
